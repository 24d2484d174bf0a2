"""Checkpoint conversion: Hugging Face transformers <-> albert-jax, and original TF checkpoints -> albert-jax.

The mapping is a table of names, not code per layer:

* a flax path ``a/b/c/<leaf>`` is the HF tensor ``a.b.c.<HF leaf>`` (LEAF_TO_HF; flax kernels are the
  transpose of torch `Linear.weight`);
* encoder parameters under ``albert/encoder/albert_layer_groups/<sub>`` are stacked ``[group, inner, ...]``
  and map to ``albert.encoder.albert_layer_groups.{g}.albert_layers.{k}.<sub>`` (LAYER_TEMPLATE).

Command line: ``python -m albert_jax.convert {to-hf,from-hf,from-tf} --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Iterable

import flax.linen as nn
import numpy as np
from flax import traverse_util

from albert_jax.config import AlbertConfig

LAYER_PREFIX = "albert/encoder/albert_layer_groups/"
LAYER_TEMPLATE = "albert.encoder.albert_layer_groups.{g}.albert_layers.{k}."
LAYER_RE = re.compile(r"^albert\.encoder\.albert_layer_groups\.(\d+)\.albert_layers\.(\d+)\.(.+)$")
# flax leaf name -> (HF leaf name, transpose?)
LEAF_TO_HF = {"kernel": ("weight", True), "scale": ("weight", False), "embedding": ("weight", False),
              "bias": ("bias", False)}
# HF tensors that are tied copies of others (never stored by transformers, ignored when present)
TIED_HF_NAMES = ("predictions.decoder.weight", "predictions.decoder.bias")
# optional top-level sub-trees (heads); everything under `albert/` except the pooler is required
HEAD_TREES = ("predictions", "sop_classifier", "classifier", "qa_outputs")
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PICKLE_NAME = "pytorch_model.bin"


class CheckpointError(ValueError):
    """A checkpoint that does not match the model: names the missing, unexpected or mis-shaped tensors."""


# ---------------------------------------------------------------------------------------------------------
# Name mapping
# ---------------------------------------------------------------------------------------------------------
def _hf_leaf(path: str) -> tuple[str, str, bool]:
    module, leaf = path.rsplit("/", 1)
    hf_leaf, transpose = LEAF_TO_HF[leaf]
    return module.replace("/", "."), hf_leaf, transpose


def _flax_leaf(module: str, hf_leaf: str) -> tuple[str, bool]:
    """(flax leaf name, transpose?) of an HF tensor, from its module name (HF uses `weight` for all)."""
    if hf_leaf == "bias":
        return "bias", False
    last = module.rsplit(".", 1)[-1]
    if "LayerNorm" in last or "layer_norm" in last:
        return "scale", False
    if last.endswith("embeddings"):
        return "embedding", False
    return "kernel", True


def to_hf_state_dict(params: dict) -> dict[str, np.ndarray]:
    """albert-jax params (any head) -> HF tensor dict (float32 numpy), names as transformers saves them."""
    out = {}
    for path, value in traverse_util.flatten_dict(params, sep="/").items():
        value = np.asarray(value, dtype=np.float32)
        module, hf_leaf, transpose = _hf_leaf(path)
        if path.startswith(LAYER_PREFIX):
            sub = module[len(LAYER_PREFIX):].replace("/", ".")
            for g in range(value.shape[0]):
                for k in range(value.shape[1]):
                    tensor = value[g, k].T if transpose else value[g, k]
                    out[f"{LAYER_TEMPLATE.format(g=g, k=k)}{sub}.{hf_leaf}"] = np.ascontiguousarray(tensor)
        else:
            name = f"{module}.{hf_leaf}" if module != "predictions" or hf_leaf != "bias" else "predictions.bias"
            out[name] = np.ascontiguousarray(value.T if transpose else value)
    return out


def _normalise_hf_name(name: str) -> str:
    """Standalone `AlbertModel` checkpoints have no `albert.` prefix."""
    if name.split(".", 1)[0] in ("embeddings", "encoder", "pooler"):
        return "albert." + name
    return name


def from_hf_state_dict(tensors: dict[str, np.ndarray], config: AlbertConfig, strict: bool = True) -> dict:
    """HF tensor dict -> albert-jax params (full tree: backbone + whichever heads are present).

    Raises CheckpointError listing missing, unexpected and mis-shaped tensors by their HF names
    (unexpected ones only when `strict`).
    """
    from albert_jax import modeling

    expected = traverse_util.flatten_dict(
        nn.meta.unbox(modeling.abstract_params(modeling.AlbertForPreTraining(config))), sep="/")
    groups, inner = config.num_hidden_groups, config.inner_group_num
    layers: dict[str, np.ndarray] = {}
    flat: dict[str, np.ndarray] = {}
    unexpected, mismatched, present = [], [], set()
    for raw_name, tensor in tensors.items():
        name = _normalise_hf_name(raw_name)
        if name in TIED_HF_NAMES or name.endswith(("position_ids", "token_type_ids")):
            continue
        module, hf_leaf = name.rsplit(".", 1) if "." in name else ("", name)
        m = LAYER_RE.match(name)
        if m:
            g, k, sub = int(m.group(1)), int(m.group(2)), m.group(3)
            sub_module, hf_leaf = sub.rsplit(".", 1)
            leaf, transpose = _flax_leaf(sub_module, hf_leaf)
            path = LAYER_PREFIX + sub_module.replace(".", "/") + "/" + leaf
            if path not in expected or g >= groups or k >= inner:
                unexpected.append(raw_name)
                continue
            present.add(path)
            want = expected[path].shape[2:]
            value = tensor.T if transpose else tensor
            if value.shape != want:
                mismatched.append(_shape_mismatch(raw_name, tensor, want, transpose))
                continue
            stack = layers.setdefault(path, np.full((groups, inner) + want, np.nan, np.float32))
            stack[g, k] = value
            continue
        if name == "predictions.bias":
            path, transpose = "predictions/bias", False
        else:
            leaf, transpose = _flax_leaf(module, hf_leaf)
            path = module.replace(".", "/") + "/" + leaf
        head = path.split("/", 1)[0]
        if path not in expected and head not in ("classifier", "qa_outputs"):
            unexpected.append(raw_name)
            continue
        present.add(path)
        value = np.asarray(tensor.T if transpose else tensor, np.float32)
        if path in expected and value.shape != expected[path].shape:
            mismatched.append(_shape_mismatch(raw_name, tensor, expected[path].shape, transpose))
            continue
        flat[path] = value
    for path, stack in layers.items():
        for g, k in zip(*np.nonzero(np.isnan(stack).all(axis=tuple(range(2, stack.ndim))))):
            module, hf_leaf, _ = _hf_leaf(path)
            sub = module[len(LAYER_PREFIX):].replace("/", ".")
            mismatched.append(f"{LAYER_TEMPLATE.format(g=g, k=k)}{sub}.{hf_leaf}: missing")
        flat[path] = stack
    required = [p for p in expected if p.startswith("albert/") and not p.startswith("albert/pooler/")]
    missing = [_hf_name_of(p) for p in required if p not in present]
    problems = []
    if missing:
        problems.append(f"missing tensors: {', '.join(sorted(missing))}")
    if mismatched:
        problems.append(f"shape mismatches: {'; '.join(mismatched)}")
    if unexpected and strict:
        problems.append(f"unexpected tensors: {', '.join(sorted(unexpected))}")
    if problems:
        raise CheckpointError("checkpoint does not match the config: " + " | ".join(problems))
    return traverse_util.unflatten_dict(flat, sep="/")


def _shape_mismatch(name: str, tensor: np.ndarray, want: tuple, transpose: bool) -> str:
    """'<HF name>: checkpoint (a, b), model expects (c, d)', both in the checkpoint's (torch) layout."""
    return f"{name}: checkpoint {tuple(tensor.shape)}, model expects {tuple(want[::-1] if transpose else want)}"


def _hf_name_of(path: str) -> str:
    module, hf_leaf, _ = _hf_leaf(path)
    if path.startswith(LAYER_PREFIX):
        return f"{LAYER_TEMPLATE.format(g='*', k='*')}{module[len(LAYER_PREFIX):].replace('/', '.')}.{hf_leaf}"
    return f"{module}.{hf_leaf}"


# ---------------------------------------------------------------------------------------------------------
# Directories
# ---------------------------------------------------------------------------------------------------------
def read_safetensors(files: Iterable[str]) -> dict[str, np.ndarray]:
    from safetensors import safe_open
    tensors = {}
    for file in files:
        try:
            with safe_open(file, framework="numpy") as f:
                for name in f.keys():
                    tensors[name] = np.asarray(f.get_tensor(name), dtype=np.float32)
        except FileNotFoundError:
            raise CheckpointError(f"{file} is listed in the checkpoint but does not exist") from None
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(f"{file} is not a readable safetensors file: {e}") from None
    return tensors


def _read_pickle(file: str) -> dict[str, np.ndarray]:
    import torch
    state = torch.load(file, map_location="cpu", weights_only=False)
    return {k: v.float().numpy() for k, v in state.items()}


def read_hf_tensors(path: str, allow_pickle: bool = False) -> dict[str, np.ndarray]:
    """All tensors of an HF model directory: model.safetensors, a sharded index, or (opt-in) pickle."""
    single, index, pickle = (os.path.join(path, n) for n in (WEIGHTS_NAME, WEIGHTS_INDEX_NAME, PICKLE_NAME))
    if os.path.isfile(single):
        return read_safetensors([single])
    if os.path.isfile(index):
        try:
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index} is not a valid safetensors index (needs a 'weight_map'): {e}") from None
        return read_safetensors(os.path.join(path, f) for f in sorted(set(weight_map.values())))
    if os.path.isfile(pickle):
        if not allow_pickle:
            raise CheckpointError(
                f"{pickle} is a pickle file, and unpickling can run arbitrary code; convert it to safetensors or "
                "pass allow_pickle=True (--allow-pickle) if you trust its source")
        return _read_pickle(pickle)
    raise CheckpointError(f"no weights in {path}: expected {WEIGHTS_NAME}, {WEIGHTS_INDEX_NAME} or {PICKLE_NAME}")


def load_hf(path: str, allow_pickle: bool = False, strict: bool = True) -> tuple[AlbertConfig, dict]:
    """Reads a transformers ALBERT directory -> (AlbertConfig, params with every head found in it)."""
    if not os.path.isdir(path):
        raise CheckpointError(f"{path} is not a directory (expected a transformers model directory)")
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise CheckpointError(f"no config.json in {path}")
    config = AlbertConfig.from_json_file(config_file)
    if "model_type" in config.extra:
        raise CheckpointError(f"{config_file} has model_type={config.extra['model_type']!r}, expected 'albert'")
    config = config.replace(sharing="all", dtype="float32")
    return config, from_hf_state_dict(read_hf_tensors(path, allow_pickle), config, strict)


def _architectures(params: dict) -> list[str]:
    if "sop_classifier" in params:
        return ["AlbertForPreTraining"]
    if "qa_outputs" in params:
        return ["AlbertForQuestionAnswering"]
    if "predictions" in params:
        return ["AlbertForMaskedLM"]
    return ["AlbertModel"]


def hf_config_dict(config: AlbertConfig, params: dict | None = None) -> dict:
    """The config.json transformers reads for this model (sharing expressed as num_hidden_groups)."""
    groups = config.hf_num_hidden_groups
    out = config.to_dict()
    for name in ("sharing", "param_dtype", "remat_policy"):
        out.pop(name)
    out.update(num_hidden_groups=groups, dtype="float32", tie_word_embeddings=True)
    if params is not None:
        out["architectures"] = _architectures(params)
    return out


def save_hf(config: AlbertConfig, params: dict, out_dir: str) -> None:
    """Writes `config.json` + `model.safetensors` that transformers' Albert* classes load with no
    missing or unexpected keys. Raises ValueError for sharing modes transformers cannot express."""
    from safetensors.numpy import save_file
    config_json = hf_config_dict(config, params)
    os.makedirs(out_dir, exist_ok=True)
    tensors = to_hf_state_dict(params)
    save_file(tensors, os.path.join(out_dir, WEIGHTS_NAME), metadata={"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config_json, f, indent=2, sort_keys=True)
        f.write("\n")


# ---------------------------------------------------------------------------------------------------------
# Original TF checkpoints (google-research/albert)
# ---------------------------------------------------------------------------------------------------------
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
    **{TF_LAYER + tf_sub + "/" + tf_leaf: (LAYER_TEMPLATE + hf_sub + "." + hf_leaf, tf_leaf == "kernel")
       for tf_sub, hf_sub in (("attention_1/self/query", "attention.query"),
                              ("attention_1/self/key", "attention.key"),
                              ("attention_1/self/value", "attention.value"),
                              ("attention_1/output/dense", "attention.dense"),
                              ("ffn_1/intermediate/dense", "ffn"),
                              ("ffn_1/intermediate/output/dense", "ffn_output"))
       for tf_leaf, hf_leaf in (("kernel", "weight"), ("bias", "bias"))},
    **{TF_LAYER + tf_sub + "/" + tf_leaf: (LAYER_TEMPLATE + hf_sub + "." + hf_leaf, False)
       for tf_sub, hf_sub in (("LayerNorm", "attention.LayerNorm"), ("LayerNorm_1", "full_layer_layer_norm"))
       for tf_leaf, hf_leaf in (("gamma", "weight"), ("beta", "bias"))},
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
        raise CheckpointError(f"{path}: hidden_act={config.hidden_act!r} is not an activation of the original "
                              f"code ({sorted(TF_ACTIVATIONS)})")
    return config.replace(hidden_act=TF_ACTIVATIONS[config.hidden_act])


def _tf_table(config: AlbertConfig) -> dict[str, tuple[str, bool]]:
    """TF_TO_HF with the layer names spelled out for `config`'s groups and inner layers."""
    table = {}
    for tf_name, (hf_name, transpose) in TF_TO_HF.items():
        if tf_name.startswith(TF_LAYER):
            table.update({tf_name.format(g=g, k=k): (hf_name.format(g=g, k=k), transpose)
                          for g in range(config.num_hidden_groups) for k in range(config.inner_group_num)})
        elif not (tf_name.startswith("bert/encoder/embedding_hidden_mapping_in/")
                  and config.embedding_size == config.hidden_size):
            table[tf_name] = (hf_name, transpose)
    return table


def tf_to_hf_state_dict(variables: dict[str, np.ndarray], config: AlbertConfig) -> dict[str, np.ndarray]:
    """Original TF variables (name -> array) -> HF tensor dict, by the TF_TO_HF table.

    Optimizer slots are skipped. Raises CheckpointError naming, by their TF names, unexpected variables
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
        raise CheckpointError("TF checkpoint does not match the config: " + " | ".join(problems))
    if config.embedding_size == config.hidden_size:
        # The original applies no projection when E == H; transformers always has one: the identity.
        out["albert.encoder.embedding_hidden_mapping_in.weight"] = np.eye(config.hidden_size, dtype=np.float32)
        out["albert.encoder.embedding_hidden_mapping_in.bias"] = np.zeros(config.hidden_size, np.float32)
    return out


def load_tf(checkpoint: str, config_file: str) -> tuple[AlbertConfig, dict]:
    """Reads an original ALBERT checkpoint (prefix, e.g. `model.ckpt-best`, or a directory holding a
    `checkpoint` file) and its `albert_config.json` -> (AlbertConfig, params with the heads found)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # only here: importing convert must stay light
    prefix = tf.train.latest_checkpoint(checkpoint) if os.path.isdir(checkpoint) else checkpoint
    if not prefix or not tf.io.gfile.exists(prefix + ".index"):
        raise CheckpointError(f"no TF checkpoint at {checkpoint}: expected {checkpoint}.index and "
                              f"{checkpoint}.data-* (pass the prefix, e.g. .../model.ckpt-best)")
    config = tf_config(config_file).replace(dtype="float32")
    reader = tf.train.load_checkpoint(prefix)
    variables = {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(prefix)
                 if not TF_SKIP_RE.search(name)}
    return config, from_hf_state_dict(tf_to_hf_state_dict(variables, config), config)


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m albert_jax.convert", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    to_hf = sub.add_parser("to-hf", help="albert-jax checkpoint (work dir or exported dir) -> HF directory")
    to_hf.add_argument("--checkpoint", required=True, help="albert-jax directory written by save_pretrained")
    to_hf.add_argument("--out", required=True, help="output directory (config.json + model.safetensors)")
    from_hf = sub.add_parser("from-hf", help="HF directory -> albert-jax directory")
    from_hf.add_argument("--hf-dir", required=True)
    from_hf.add_argument("--out", required=True)
    from_hf.add_argument("--allow-pickle", action="store_true", help="accept pytorch_model.bin (unsafe)")
    from_tf = sub.add_parser("from-tf", help="original google-research/albert TF checkpoint -> albert-jax and/or HF")
    from_tf.add_argument("--tf-checkpoint", required=True, help="checkpoint prefix, e.g. .../model.ckpt-best")
    from_tf.add_argument("--albert-config", required=True, help="the checkpoint's albert_config.json")
    from_tf.add_argument("--out", help="albert-jax output directory")
    from_tf.add_argument("--hf-out", help="transformers output directory")
    from_tf.add_argument("--spiece-model", help="the checkpoint's SentencePiece model (e.g. 30k-clean.model), "
                                                "saved as spiece.model into the output directories")
    args = parser.parse_args(argv)
    if args.command == "from-tf" and not (args.out or args.hf_out):
        parser.error("from-tf needs --out and/or --hf-out")
    from albert_jax import pretrained
    try:
        if args.command == "to-hf":
            config, params = pretrained.from_pretrained(args.checkpoint)
            save_hf(config, params, args.out)
        elif args.command == "from-hf":
            config, params = load_hf(args.hf_dir, allow_pickle=args.allow_pickle)
            pretrained.save_pretrained(config, params, args.out)
        else:
            _from_tf(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {', '.join(d for d in (args.out, getattr(args, 'hf_out', None)) if d)}")
    return 0


def _from_tf(args) -> None:
    from albert_jax import pretrained
    from albert_jax.tokenizer import AlbertTokenizer, check_vocab_size
    config, params = load_tf(args.tf_checkpoint, args.albert_config)
    tokenizer = None
    if args.spiece_model:
        tokenizer = AlbertTokenizer(args.spiece_model)
        check_vocab_size(tokenizer, config.vocab_size)
    for out, save in ((args.out, pretrained.save_pretrained), (args.hf_out, save_hf)):
        if out:
            save(config, params, out)
            if tokenizer is not None:
                tokenizer.save_pretrained(out)


if __name__ == "__main__":
    sys.exit(main())
