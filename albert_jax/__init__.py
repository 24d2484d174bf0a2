"""albert-jax: ALBERT (A Lite BERT) in JAX/Flax."""

from albert_jax.config import PRESETS, AlbertConfig
from albert_jax.modeling import (
    HEADS,
    AlbertForMaskedLM,
    AlbertForMultipleChoice,
    AlbertForPreTraining,
    AlbertForQuestionAnswering,
    AlbertForSequenceClassification,
    AlbertForTokenClassification,
    AlbertModel,
    count_params,
    init_params,
)
from albert_jax.pipelines import pipeline
from albert_jax.pretrained import from_pretrained, save_pretrained

__all__ = [
    "AlbertConfig", "PRESETS", "HEADS", "AlbertModel", "AlbertForPreTraining", "AlbertForMaskedLM",
    "AlbertForSequenceClassification", "AlbertForTokenClassification", "AlbertForQuestionAnswering",
    "AlbertForMultipleChoice", "count_params", "init_params", "pipeline", "from_pretrained", "save_pretrained",
]
