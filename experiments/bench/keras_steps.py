"""Keras-Hub's side: `keras_hub.models.AlbertBackbone` with the exported weights, the pretraining heads built
from Keras-Hub's own layers (`MaskedLMHead` tied to the token embedding, a Dense SOP classifier), a Dense span
head for SQuAD, and Keras' standard compiled paths (`predict_on_batch`, `train_on_batch` with AdamW).

KERAS_BACKEND must be 'jax' before keras is first imported: only the worker (worker.py) imports this module.
"""

from __future__ import annotations

import os
import re

import keras
import keras_hub
import numpy as np
from keras_hub.layers import MaskedLMHead
from keras_hub.src.utils.keras_utils import gelu_approximate

from albert_jax.convert import read_hf_tensors

from .workloads import OPTIMIZER, Workload, decays, make_inputs

if keras.config.backend() != "jax":
    raise RuntimeError(
        f"Keras-Hub must run on the JAX backend here, got {keras.config.backend()!r}: set "
        "KERAS_BACKEND=jax before keras is imported"
    )

_LAYER = r"group_(?P<g>\d+)_inner_layer_(?P<k>\d+)/"
_HF_LAYER = "albert.encoder.albert_layer_groups.{g}.albert_layers.{k}."
# Keras variable path -> HF tensor name ({leaf}: weight or bias). A Keras kernel is the transpose of a torch
# Linear weight, reshaped to the Keras shape (attention kernels split the heads: [H, heads, head_dim]).
KERAS_TO_HF = (
    (r"token_embedding/embeddings", "albert.embeddings.word_embeddings.weight"),
    (r"position_embedding/embeddings", "albert.embeddings.position_embeddings.weight"),
    (r"segment_embedding/embeddings", "albert.embeddings.token_type_embeddings.weight"),
    (r"embeddings_layer_norm/(gamma|beta)", "albert.embeddings.LayerNorm.{leaf}"),
    (r"embedding_projection/(kernel|bias)", "albert.encoder.embedding_hidden_mapping_in.{leaf}"),
    (_LAYER + r"self_attention_layer/(?P<p>query|key|value)/(kernel|bias)", _HF_LAYER + "attention.{p}.{leaf}"),
    (_LAYER + r"self_attention_layer/attention_output/(kernel|bias)", _HF_LAYER + "attention.dense.{leaf}"),
    (_LAYER + r"self_attention_layer_norm/(gamma|beta)", _HF_LAYER + "attention.LayerNorm.{leaf}"),
    (_LAYER + r"feedforward_intermediate_dense/(kernel|bias)", _HF_LAYER + "ffn.{leaf}"),
    (_LAYER + r"feedforward_output_dense/(kernel|bias)", _HF_LAYER + "ffn_output.{leaf}"),
    (_LAYER + r"feedforward_layer_norm/(gamma|beta)", _HF_LAYER + "full_layer_layer_norm.{leaf}"),
    (r"pooled_dense/(kernel|bias)", "albert.pooler.{leaf}"),
    (r"mlm_head/intermediate_dense/(kernel|bias)", "predictions.dense.{leaf}"),
    (r"mlm_head/intermediate_layer_norm/(gamma|beta)", "predictions.LayerNorm.{leaf}"),
    (r"mlm_head/output_bias", "predictions.bias"),
    (r"sop_classifier/(kernel|bias)", "sop_classifier.classifier.{leaf}"),
    (r"qa_outputs/(kernel|bias)", "qa_outputs.{leaf}"),
)
LEAF = {"kernel": "weight", "gamma": "weight", "beta": "bias", "bias": "bias"}


def hf_name(path: str) -> str | None:
    """The HF tensor a Keras variable path holds (None: not in the table)."""
    for pattern, template in KERAS_TO_HF:
        m = re.fullmatch(pattern, path)
        if m:
            leaf = path.rsplit("/", 1)[1]
            return template.format(leaf=LEAF.get(leaf, leaf), **m.groupdict())
    return None


def load_weights(model: keras.Model, tensors: dict[str, np.ndarray], unused_ok=("pooled_dense/",)) -> None:
    """Assigns every variable of `model` its HF tensor. ValueError naming any variable without a tensor (except
    `unused_ok` prefixes whose tensor is absent: the QA checkpoint has no pooler), any shape mismatch, and any
    HF tensor left unused (the tied decoder copies aside)."""
    used = set()
    for variable in model.weights:
        name = hf_name(variable.path)
        if name is None or (name not in tensors and not variable.path.startswith(unused_ok)):
            raise ValueError(f"Keras variable {variable.path} {tuple(variable.shape)} has no HF tensor ({name})")
        if name not in tensors:
            continue
        value = tensors[name]
        if variable.path.endswith("/kernel"):
            value = value.T
        if value.size != np.prod(variable.shape):
            raise ValueError(f"{name} {value.shape} does not fit Keras variable {variable.path} {variable.shape}")
        variable.assign(value.reshape(variable.shape))
        used.add(name)
    unused = set(tensors) - used - {"predictions.decoder.weight", "predictions.decoder.bias"}
    if unused:
        raise ValueError(f"HF tensors not loaded into Keras-Hub: {sorted(unused)}")


def _config(hf_dir: str) -> dict:
    import json

    with open(os.path.join(hf_dir, "config.json")) as f:
        return json.load(f)


def backbone(hf_dir: str, w: Workload) -> keras_hub.models.AlbertBackbone:
    """A Keras-Hub AlbertBackbone with the dimensions of the HF directory's config.json (weights not loaded)."""
    c = _config(hf_dir)
    if c["hidden_act"] != "gelu_new":
        raise ValueError(f"Keras-Hub's AlbertBackbone has gelu_new only, the checkpoint uses {c['hidden_act']!r}")
    return keras_hub.models.AlbertBackbone(
        vocabulary_size=c["vocab_size"],
        num_layers=w.layers or c["num_hidden_layers"],
        num_heads=c["num_attention_heads"],
        embedding_dim=c["embedding_size"],
        hidden_dim=c["hidden_size"],
        intermediate_dim=c["intermediate_size"],
        num_groups=c["num_hidden_groups"],
        num_inner_repetitions=c["inner_group_num"],
        dropout=0.0,
        max_sequence_length=c["max_position_embeddings"],
        num_segments=c["type_vocab_size"],
    )


def _inputs(x: dict) -> dict:
    return {"token_ids": x["input_ids"], "segment_ids": x["token_type_ids"], "padding_mask": x["attention_mask"]}


def set_dtype(dtype: str) -> None:
    """float32, or mixed bfloat16 (float32 variables, bfloat16 compute) as Keras names it."""
    keras.config.set_dtype_policy("float32" if dtype == "float32" else f"mixed_{dtype}")


class Forward:
    """`runner()` = `backbone.predict_on_batch` (jitted by Keras); `outputs()` = its two outputs."""

    def __init__(self, hf_dir: str, w: Workload, dtype: str):
        set_dtype(dtype)
        self.model = backbone(hf_dir, w)
        tensors = {k: v for k, v in read_hf_tensors(hf_dir).items() if k.startswith("albert.")}  # no heads
        load_weights(self.model, tensors, unused_ok=())
        self.inputs = _inputs(make_inputs(w, self.model.vocabulary_size))

    def __call__(self):
        self.model.predict_on_batch(self.inputs)

    def outputs(self) -> dict:
        out = self.model.predict_on_batch(self.inputs)
        return {
            "last_hidden_state": np.asarray(out["sequence_output"], np.float32),
            "pooler_output": np.asarray(out["pooled_output"], np.float32),
        }


def _training_model(hf_dir: str, w: Workload):
    """(keras.Model, x, y, loss_weights) of a training workload."""
    net = backbone(hf_dir, w)
    x = make_inputs(w, net.vocabulary_size)
    inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in net.input}
    out = net(inputs)
    if w.head == "pretraining":
        positions = keras.Input(shape=(None,), dtype="int32", name="mask_positions")
        mlm = MaskedLMHead(
            token_embedding=net.token_embedding,
            intermediate_activation=gelu_approximate,
            layer_norm_epsilon=_config(hf_dir)["layer_norm_eps"],
            name="mlm_head",
        )(out["sequence_output"], mask_positions=positions)
        sop = keras.layers.Dense(2, name="sop_classifier")(out["pooled_output"])
        model = keras.Model({**inputs, "mask_positions": positions}, [mlm, sop])
        if w.loss == "mlm_all_sop":  # every position "masked": Keras-Hub's head gathers them all
            every = np.broadcast_to(np.arange(w.seq, dtype=np.int32), x["input_ids"].shape)
            feed = dict(_inputs(x), mask_positions=every)
            return model, feed, [x["mlm_labels"], x["sentence_order_label"]], [1.0, 1.0]
        feed = dict(_inputs(x), mask_positions=x["masked_lm_positions"])
        return model, feed, [x["masked_lm_ids"], x["sentence_order_label"]], [1.0, 1.0]
    if w.head == "qa":
        logits = keras.layers.Dense(2, name="qa_outputs")(out["sequence_output"])
        model = keras.Model(inputs, [logits[..., 0], logits[..., 1]])
        return model, _inputs(x), [x["start_positions"], x["end_positions"]], [0.5, 0.5]
    raise ValueError(f"no Keras training model for head {w.head!r}")


class TrainStep:
    """`runner()` = `model.train_on_batch` (one jitted AdamW step), returning the loss before the update."""

    def __init__(self, hf_dir: str, w: Workload, dtype: str):
        set_dtype(dtype)
        self.model, self.x, self.y, weights = _training_model(hf_dir, w)
        load_weights(self.model, read_hf_tensors(hf_dir))
        o = OPTIMIZER
        optimizer = keras.optimizers.AdamW(
            learning_rate=o["learning_rate"],
            weight_decay=o["weight_decay"],
            beta_1=o["b1"],
            beta_2=o["b2"],
            epsilon=o["eps"],
            global_clipnorm=o["clip_norm"],
        )
        optimizer.exclude_from_weight_decay(var_list=[v for v in self.model.trainable_variables if not decays(v.path)])
        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.model.compile(optimizer=optimizer, loss=[ce, ce], loss_weights=weights, jit_compile=True)

    def __call__(self) -> float:
        return float(self.model.train_on_batch(self.x, self.y, return_dict=True)["loss"])

    def allocate_optimizer_state(self):
        """Builds AdamW's variables now (Keras does it in the first step), for a memory baseline."""
        self.model.optimizer.build(self.model.trainable_variables)
