"""Checkpoint conversion: HF transformers <-> albert-jax (`hf`), original TF checkpoints -> albert-jax (`tf`).

Command line: ``python -m albert_jax.convert {to-hf,from-hf,from-tf} --help`` (`cli.main`; `cli` is not
imported here: it reads and writes albert-jax directories through `albert_jax.pretrained`, which imports `hf`).
"""

from albert_jax.convert.hf import (
    LAYER_PREFIX,
    LAYER_RE,
    LAYER_TEMPLATE,
    LEAF_TO_HF,
    PICKLE_NAME,
    TIED_HF_NAMES,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
    ConversionError,
    from_hf_state_dict,
    hf_config_dict,
    load_hf,
    read_hf_tensors,
    read_safetensors,
    save_hf,
    save_safetensors,
    to_hf_state_dict,
)
from albert_jax.convert.tf import (
    TF_ACTIVATIONS,
    TF_LAYER,
    TF_SECTIONS,
    TF_SKIP_RE,
    TF_TO_HF,
    load_tf,
    tf_config,
    tf_group_mismatch,
    tf_to_hf_state_dict,
)

__all__ = [
    "ConversionError",
    "to_hf_state_dict",
    "from_hf_state_dict",
    "read_safetensors",
    "read_hf_tensors",
    "load_hf",
    "hf_config_dict",
    "save_hf",
    "save_safetensors",
    "tf_config",
    "tf_group_mismatch",
    "tf_to_hf_state_dict",
    "load_tf",
    "LAYER_PREFIX",
    "LAYER_RE",
    "LAYER_TEMPLATE",
    "LEAF_TO_HF",
    "TIED_HF_NAMES",
    "WEIGHTS_NAME",
    "WEIGHTS_INDEX_NAME",
    "PICKLE_NAME",
    "TF_LAYER",
    "TF_TO_HF",
    "TF_SKIP_RE",
    "TF_SECTIONS",
    "TF_ACTIVATIONS",
]
