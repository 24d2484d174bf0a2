"""`save_pretrained` / `from_pretrained`: albert-jax model directories (and HF directories, read as-is).

An albert-jax directory holds `config.json` (the full AlbertConfig, `sharing` included) and
`albert_jax.safetensors` (the flax parameter tree, keys joined with '/'). Every sharing mode round-trips;
`from_pretrained` also reads a transformers directory (see `convert.hf.load_hf`).
"""

from __future__ import annotations

import os

import jax
import numpy as np
from flax import traverse_util

from albert_jax.config import AlbertConfig
from albert_jax.convert import hf

PARAMS_NAME = "albert_jax.safetensors"


def save_pretrained(config: AlbertConfig, params: dict, out_dir: str) -> None:
    """Writes `config.json` + `albert_jax.safetensors` (float32 host copies of `params`) into `out_dir`."""
    os.makedirs(out_dir, exist_ok=True)
    flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
    hf.save_safetensors(
        {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in flat.items()}, os.path.join(out_dir, PARAMS_NAME)
    )
    config.to_json_file(os.path.join(out_dir, "config.json"))


def from_pretrained(path: str, allow_pickle: bool = False) -> tuple[AlbertConfig, dict]:
    """Reads an albert-jax or transformers directory -> (AlbertConfig, params as numpy arrays)."""
    own = os.path.join(path, PARAMS_NAME)
    if not os.path.isfile(own):
        return hf.load_hf(path, allow_pickle=allow_pickle)
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise hf.ConversionError(f"no config.json in {path}")
    config = AlbertConfig.from_json_file(config_file)
    tensors = hf.read_safetensors([own])
    return config, traverse_util.unflatten_dict(tensors, sep="/")
