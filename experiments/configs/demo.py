"""The README demo: a small ALBERT pretrained for a few minutes on a 2-core CPU.

    python run.py --config=experiments/configs/demo.py --workdir=runs/demo

Built-in corpus (Python's own documentation) -> 6k SentencePiece vocabulary -> a small ALBERT (E=64,
H=128, 4 shared layers) -> MLM + SOP with LAMB -> HF export in runs/demo/hf -> fill-mask predictions.
Expected: MLM accuracy well above chance (1/6000) and SOP accuracy above 0.5 on held-out documents.
"""

from albert_jax.training.pretrain import demo_config


def get_config():
    c = demo_config()
    c.export.hf_dir = "hf"
    c.export.fill_mask = ("The function returns a [MASK] of the arguments.", "Hello I'm a [MASK] model.")
    return c
