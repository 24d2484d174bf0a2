"""albert-jax: ALBERT (A Lite BERT) in JAX/Flax.

The names below are imported on first use, so that `albert_jax.data` and `albert_jax.tokenizer` (the data
preparation's worker processes) do not load jax and flax.
"""

import importlib

_EXPORTS = {
    "AlbertConfig": "albert_jax.config",
    "PRESETS": "albert_jax.config",
    "HEADS": "albert_jax.modeling",
    "AlbertModel": "albert_jax.modeling",
    "AlbertForPreTraining": "albert_jax.modeling",
    "AlbertForMaskedLM": "albert_jax.modeling",
    "AlbertForSequenceClassification": "albert_jax.modeling",
    "AlbertForTokenClassification": "albert_jax.modeling",
    "AlbertForQuestionAnswering": "albert_jax.modeling",
    "AlbertForMultipleChoice": "albert_jax.modeling",
    "count_params": "albert_jax.modeling",
    "init_params": "albert_jax.modeling",
    "pipeline": "albert_jax.pipelines",
    "from_pretrained": "albert_jax.pretrained",
    "save_pretrained": "albert_jax.pretrained",
}
__all__ = list(_EXPORTS)  # pyright: ignore[reportUnsupportedDunderAll] (the TYPE_CHECKING block declares them)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'albert_jax' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__():
    return sorted(list(globals()) + __all__)
