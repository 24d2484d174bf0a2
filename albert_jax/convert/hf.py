"""Hugging Face transformers <-> albert-jax: the name table, state dicts and model directories.

The mapping is a table of names, not code per layer:

* a flax path ``a/b/c/<leaf>`` is the HF tensor ``a.b.c.<HF leaf>`` (LEAF_TO_HF; flax kernels are the
  transpose of torch `Linear.weight`);
* encoder parameters under ``albert/encoder/albert_layer_groups/<sub>`` are stacked ``[group, inner, ...]``
  and map to ``albert.encoder.albert_layer_groups.{g}.albert_layers.{k}.<sub>`` (LAYER_TEMPLATE).
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable
from typing import cast

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

from albert_jax.config import AlbertConfig

LAYER_PREFIX = "albert/encoder/albert_layer_groups/"
LAYER_TEMPLATE = "albert.encoder.albert_layer_groups.{g}.albert_layers.{k}."
LAYER_RE = re.compile(r"^albert\.encoder\.albert_layer_groups\.(\d+)\.albert_layers\.(\d+)\.(.+)$")
# flax leaf name -> (HF leaf name, transpose?)
LEAF_TO_HF = {
    "kernel": ("weight", True),
    "scale": ("weight", False),
    "embedding": ("weight", False),
    "bias": ("bias", False),
}
# HF tensors that are tied copies of others (never stored by transformers, ignored when present)
TIED_HF_NAMES = ("predictions.decoder.weight", "predictions.decoder.bias")
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PICKLE_NAME = "pytorch_model.bin"


class ConversionError(ValueError):
    """A model directory or checkpoint that cannot be read or converted: missing or unreadable files, or
    tensors that do not match the model (the message names them)."""


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
            sub = module[len(LAYER_PREFIX) :].replace("/", ".")
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

    Raises ConversionError listing missing, unexpected and mis-shaped tensors by their HF names
    (unexpected ones only when `strict`).
    """
    from albert_jax import modeling

    abstract = nn.meta.unbox(modeling.abstract_params(modeling.AlbertForPreTraining(config)))
    expected = cast(dict[str, jax.ShapeDtypeStruct], traverse_util.flatten_dict(abstract, sep="/"))
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
            sub = module[len(LAYER_PREFIX) :].replace("/", ".")
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
        raise ConversionError("checkpoint does not match the config: " + " | ".join(problems))
    return traverse_util.unflatten_dict(flat, sep="/")


def _shape_mismatch(name: str, tensor: np.ndarray, want: tuple, transpose: bool) -> str:
    """'<HF name>: checkpoint (a, b), model expects (c, d)', both in the checkpoint's (torch) layout."""
    return f"{name}: checkpoint {tuple(tensor.shape)}, model expects {tuple(want[::-1] if transpose else want)}"


def _hf_name_of(path: str) -> str:
    module, hf_leaf, _ = _hf_leaf(path)
    if path.startswith(LAYER_PREFIX):
        return f"{LAYER_TEMPLATE.format(g='*', k='*')}{module[len(LAYER_PREFIX) :].replace('/', '.')}.{hf_leaf}"
    return f"{module}.{hf_leaf}"


# ---------------------------------------------------------------------------------------------------------
# Directories
# ---------------------------------------------------------------------------------------------------------
def read_safetensors(files: Iterable[str]) -> dict[str, np.ndarray]:
    """Every tensor of the given safetensors files -> {name: float32 numpy array}; ConversionError if a
    file is missing or unreadable."""
    from safetensors import safe_open

    tensors = {}
    for file in files:
        try:
            with safe_open(file, framework="numpy") as f:
                for name in f.keys():
                    tensors[name] = np.asarray(f.get_tensor(name), dtype=np.float32)
        except FileNotFoundError:
            raise ConversionError(f"{file} is listed in the checkpoint but does not exist") from None
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise ConversionError(f"{file} is not a readable safetensors file: {e}") from None
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
            raise ConversionError(f"{index} is not a valid safetensors index (needs a 'weight_map'): {e}") from None
        return read_safetensors(os.path.join(path, f) for f in sorted(set(weight_map.values())))
    if os.path.isfile(pickle):
        if not allow_pickle:
            raise ConversionError(
                f"{pickle} is a pickle file, and unpickling can run arbitrary code; convert it to safetensors or "
                "pass allow_pickle=True (--allow-pickle) if you trust its source"
            )
        return _read_pickle(pickle)
    raise ConversionError(f"no weights in {path}: expected {WEIGHTS_NAME}, {WEIGHTS_INDEX_NAME} or {PICKLE_NAME}")


def load_hf(path: str, allow_pickle: bool = False, strict: bool = True) -> tuple[AlbertConfig, dict]:
    """Reads a transformers ALBERT directory -> (AlbertConfig, params with every head found in it)."""
    if not os.path.isdir(path):
        raise ConversionError(f"{path} is not a directory (expected a model directory: config.json + weights)")
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise ConversionError(f"no config.json in {path}")
    config = AlbertConfig.from_json_file(config_file)
    if "model_type" in config.extra:
        raise ConversionError(f"{config_file} has model_type={config.extra['model_type']!r}, expected 'albert'")
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
    for name in ("sharing", "param_dtype", "remat_policy", "scan_unroll"):
        out.pop(name)
    out.update(num_hidden_groups=groups, dtype="float32", tie_word_embeddings=True)
    if params is not None:
        out["architectures"] = _architectures(params)
    return out


def save_safetensors(tensors: dict[str, np.ndarray], path: str, metadata: dict[str, str] | None = None) -> None:
    """`safetensors.numpy.save_file(tensors, path, metadata)`, leaving `path` with the permissions `open()`
    would give it: the replaced file's, or 0o666 less the umask for a new one.

    safetensors >= 0.8 writes a temporary file, always created 0600, and renames it onto `path`
    (safetensors/safetensors#782), which would make the weights the only file of a model directory that
    other users cannot read.
    """
    from safetensors.numpy import save_file

    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0o022)  # reading the umask means setting it: put it straight back
        os.umask(umask)
        mode = 0o666 & ~umask
    save_file(tensors, path, metadata=metadata)
    os.chmod(path, mode)


def save_hf(config: AlbertConfig, params: dict, out_dir: str) -> None:
    """Writes `config.json` + `model.safetensors` that transformers' Albert* classes load with no
    missing or unexpected keys. Raises ValueError for sharing modes transformers cannot express and
    ConversionError (naming the tensors) for params that do not match `config`; nothing is written then."""
    config_json = hf_config_dict(config, params)
    tensors = to_hf_state_dict(params)
    # the checks `load_hf` makes on reading, against the config transformers will read
    from_hf_state_dict(tensors, AlbertConfig.from_dict(config_json))
    os.makedirs(out_dir, exist_ok=True)
    save_safetensors(tensors, os.path.join(out_dir, WEIGHTS_NAME), metadata={"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config_json, f, indent=2, sort_keys=True)
        f.write("\n")
