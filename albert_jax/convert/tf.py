"""Original google-research/albert TF checkpoints -> HF tensor names -> albert-jax params.

The TF variable names map onto transformers' names by a table (TF_TO_HF); the rest of the way is
`hf.from_hf_state_dict`, so both imports share one set of checks. Layouts whose layer -> group assignment
differs from transformers' (`tf_group_mismatch`) are refused: no transformers or albert-jax model computes them.
"""

from __future__ import annotations

import os
import re

import numpy as np

from albert_jax.config import AlbertConfig
from albert_jax.convert.hf import LAYER_TEMPLATE, ConversionError, from_hf_state_dict

TF_LAYER = "bert/encoder/transformer/group_{g}/inner_group_{k}/"
# original variable name -> (HF tensor name, transpose?); TF kernels are [in, out], torch Linear.weight
# [out, in]; `output_weights` of the SOP head is already [out, in]. {g}/{k}: group, inner layer.
TF_TO_HF = {
    "bert/embeddings/word_embeddings": ("albert.embeddings.word_embeddings.weight", False),
    "bert/embeddings/token_type_embeddings": ("albert.embeddings.token_type_embeddings.weight", False),
    "bert/embeddings/position_embeddings": ("albert.embeddings.position_embeddings.weight", False),
    "bert/embeddings/LayerNorm/gamma": ("albert.embeddings.LayerNorm.weight", False),
    "bert/embeddings/LayerNorm/beta": ("albert.embeddings.LayerNorm.bias", False),
    "bert/encoder/embedding_hidden_mapping_in/kernel": ("albert.encoder.embedding_hidden_mapping_in.weight", True),
    "bert/encoder/embedding_hidden_mapping_in/bias": ("albert.encoder.embedding_hidden_mapping_in.bias", False),
    **{
        TF_LAYER + tf_sub + "/" + tf_leaf: (LAYER_TEMPLATE + hf_sub + "." + hf_leaf, tf_leaf == "kernel")
        for tf_sub, hf_sub in (
            ("attention_1/self/query", "attention.query"),
            ("attention_1/self/key", "attention.key"),
            ("attention_1/self/value", "attention.value"),
            ("attention_1/output/dense", "attention.dense"),
            ("ffn_1/intermediate/dense", "ffn"),
            ("ffn_1/intermediate/output/dense", "ffn_output"),
        )
        for tf_leaf, hf_leaf in (("kernel", "weight"), ("bias", "bias"))
    },
    **{
        TF_LAYER + tf_sub + "/" + tf_leaf: (LAYER_TEMPLATE + hf_sub + "." + hf_leaf, False)
        for tf_sub, hf_sub in (("LayerNorm", "attention.LayerNorm"), ("LayerNorm_1", "full_layer_layer_norm"))
        for tf_leaf, hf_leaf in (("gamma", "weight"), ("beta", "bias"))
    },
    "bert/pooler/dense/kernel": ("albert.pooler.weight", True),
    "bert/pooler/dense/bias": ("albert.pooler.bias", False),
    "cls/predictions/transform/dense/kernel": ("predictions.dense.weight", True),
    "cls/predictions/transform/dense/bias": ("predictions.dense.bias", False),
    "cls/predictions/transform/LayerNorm/gamma": ("predictions.LayerNorm.weight", False),
    "cls/predictions/transform/LayerNorm/beta": ("predictions.LayerNorm.bias", False),
    "cls/predictions/output_bias": ("predictions.bias", False),
    "cls/seq_relationship/output_weights": ("sop_classifier.classifier.weight", False),
    "cls/seq_relationship/output_bias": ("sop_classifier.classifier.bias", False),
}
# optimizer state and step counters (AdamWeightDecay's adam_m/v, LAMB's lamb_m/v) are not model weights
TF_SKIP_RE = re.compile(r"(^|/)global_step$|/(adam|lamb)_[^/]+$")
# sections that are all there or all absent; the first two make the model and are required
TF_SECTIONS = ("bert/embeddings/", "bert/encoder/", "bert/pooler/", "cls/predictions/", "cls/seq_relationship/")
# The original `get_activation("gelu")` is the tanh approximation, transformers' "gelu_new".
TF_ACTIVATIONS = {"gelu": "gelu_new", "relu": "relu", "tanh": "tanh"}


def tf_config(path: str) -> AlbertConfig:
    """A google-research `albert_config.json` -> AlbertConfig (hidden_act in the original's meaning).

    Its fields have transformers' names; ones the original code never reads (`down_scale_factor`,
    `net_structure_type`, `gap_size`, `num_memory_blocks`) are kept in `extra`.
    """
    config = AlbertConfig.from_json_file(path)
    if config.hidden_act not in TF_ACTIVATIONS:
        raise ConversionError(
            f"{path}: hidden_act={config.hidden_act!r} is not an activation of the original "
            f"code ({sorted(TF_ACTIVATIONS)})"
        )
    layers, groups = config.num_hidden_layers, config.num_hidden_groups
    layer = tf_group_mismatch(layers, groups)
    if layer is not None:
        raise ConversionError(
            f"{path}: num_hidden_layers={layers} with num_hidden_groups={groups} cannot be imported: the original "
            f"code puts layer {layer} in group int({layer} / {layers} * {groups}) = {int(layer / layers * groups)} "
            f"(float rounding), transformers and albert-jax put it in group {layer} * {groups} // {layers} = "
            f"{layer * groups // layers} and cannot represent the original assignment"
        )
    return config.replace(hidden_act=TF_ACTIVATIONS[config.hidden_act])


def tf_group_mismatch(num_hidden_layers: int, num_hidden_groups: int) -> int | None:
    """The first layer that the original code assigns to another group than transformers and albert-jax, or
    None when every layer's group agrees.

    The original (`modeling.transformer_model`) computes `int(layer / num_hidden_layers * num_hidden_groups)` in
    floating point, transformers and albert-jax `layer * num_hidden_groups // num_hidden_layers` exactly; the
    float product can fall just below an integer (layer 30 of 44 with 22 groups: 14.999... -> group 14, not 15).
    """
    return next(
        (
            layer
            for layer in range(num_hidden_layers)
            if int(layer / num_hidden_layers * num_hidden_groups) != layer * num_hidden_groups // num_hidden_layers
        ),
        None,
    )


def _tf_table(config: AlbertConfig) -> dict[str, tuple[str, bool]]:
    """TF_TO_HF with the layer names spelled out for `config`'s groups and inner layers."""
    table = {}
    for tf_name, (hf_name, transpose) in TF_TO_HF.items():
        if tf_name.startswith(TF_LAYER):
            table.update(
                {
                    tf_name.format(g=g, k=k): (hf_name.format(g=g, k=k), transpose)
                    for g in range(config.num_hidden_groups)
                    for k in range(config.inner_group_num)
                }
            )
        elif not (
            tf_name.startswith("bert/encoder/embedding_hidden_mapping_in/")
            and config.embedding_size == config.hidden_size
        ):
            table[tf_name] = (hf_name, transpose)
    return table


def tf_to_hf_state_dict(variables: dict[str, np.ndarray], config: AlbertConfig) -> dict[str, np.ndarray]:
    """Original TF variables (name -> array) -> HF tensor dict, by the TF_TO_HF table.

    Optimizer slots are skipped. Raises ConversionError naming, by their TF names, unexpected variables
    and the missing ones of each section present (embeddings and encoder are always required).
    """
    table = _tf_table(config)
    variables = {name: value for name, value in variables.items() if not TF_SKIP_RE.search(name)}
    out, unexpected = {}, []
    for name, value in variables.items():
        if name not in table:
            unexpected.append(name)
            continue
        hf_name, transpose = table[name]
        out[hf_name] = np.asarray(value.T if transpose else value, np.float32)
    present = {s for s in TF_SECTIONS if any(n.startswith(s) for n in variables)} | set(TF_SECTIONS[:2])
    missing = sorted(n for n in table if n not in variables and n.startswith(tuple(present)))
    problems = []
    if missing:
        problems.append(f"missing variables: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected variables: {', '.join(sorted(unexpected))}")
    if problems:
        raise ConversionError("TF checkpoint does not match the config: " + " | ".join(problems))
    if config.embedding_size == config.hidden_size:
        # The original applies no projection when E == H; transformers always has one: the identity.
        out["albert.encoder.embedding_hidden_mapping_in.weight"] = np.eye(config.hidden_size, dtype=np.float32)
        out["albert.encoder.embedding_hidden_mapping_in.bias"] = np.zeros(config.hidden_size, np.float32)
    return out


def load_tf(checkpoint: str, config_file: str) -> tuple[AlbertConfig, dict]:
    """Reads an original ALBERT checkpoint (prefix, e.g. `model.ckpt-best`, or a directory holding a
    `checkpoint` file) and its `albert_config.json` -> (AlbertConfig, params with the heads found)."""
    config = tf_config(config_file).replace(dtype="float32")
    # TF's start-up notices (C++ logs, oneDNN) would bury the converter's own messages; reading a
    # checkpoint runs no TF op, so oneDNN's kernels are not needed.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        import tensorflow as tf  # only here: importing convert must stay light
    except ImportError:
        raise ImportError(
            "reading TF checkpoints needs tensorflow: pip install tensorflow-cpu (or albert-jax[tfds])"
        ) from None
    prefix = tf.train.latest_checkpoint(checkpoint) if os.path.isdir(checkpoint) else checkpoint
    if not prefix or not tf.io.gfile.exists(prefix + ".index"):
        raise ConversionError(
            f"no TF checkpoint at {checkpoint}: expected {checkpoint}.index and "
            f"{checkpoint}.data-* (pass the prefix, e.g. .../model.ckpt-best)"
        )
    try:
        reader = tf.train.load_checkpoint(prefix)
        variables = {
            name: reader.get_tensor(name) for name, _ in tf.train.list_variables(prefix) if not TF_SKIP_RE.search(name)
        }
    except (tf.errors.OpError, IndexError) as e:  # corrupt or missing files; IndexError: a truncated .data-*
        raise ConversionError(f"{prefix} is not a readable TF checkpoint: {e}") from None
    return config, from_hf_state_dict(tf_to_hf_state_dict(variables, config), config)
