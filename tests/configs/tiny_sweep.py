"""A 2x2 sweep (E x sharing) of the tiny pretraining run, for the sweep tests."""

import os

from albert_jax.experiment import load_config
from albert_jax.training.sweep import sweep_config


def get_config():
    base = load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_pretrain.py"))
    cells = {
        f"E{e}-{sharing}": {"model": {"embedding_size": e, "sharing": sharing}}
        for e in (8, 16)
        for sharing in ("all", "none")
    }
    return sweep_config(base, cells)
