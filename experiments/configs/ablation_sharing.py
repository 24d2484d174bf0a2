"""The paper's Table 4: cross-layer sharing (all-shared, shared-attention, shared-FFN, not-shared) at
E=768 and E=128, on ALBERT-base dims at `scale=paper`, on the demo's small model at `scale=demo`.

    python experiments/ablate.py --config=experiments/configs/ablation_sharing.py:scale=demo --workdir=runs/sharing
    python experiments/ablate.py --config=experiments/configs/ablation_sharing.py:scale=demo --workdir=runs/sharing \
        --config.total_steps=50                       # any field, applied to every cell

The paper (ALBERT-base, 125k steps; parameters / avg of SQuAD1.1, SQuAD2.0, MNLI, SST-2, RACE):
E=768: all-shared 31M 79.8, shared-attention 83M 81.6, shared-FFN 57M 79.5, not-shared 108M 82.3;
E=128: all-shared 12M 80.1, shared-attention 64M 81.7, shared-FFN 38M 80.2, not-shared 89M 81.7.
"""

from albert_jax.experiment import parse_arg
from albert_jax.training.pretrain import ablation_config
from albert_jax.training.sweep import sweep_config


def get_config(arg=None):
    arg = parse_arg(arg, scale="demo")
    cells = {
        f"E{e}-{sharing}": {"model": {"embedding_size": e, "sharing": sharing}}
        for e in (768, 128)
        for sharing in ("all", "attention", "ffn", "none")
    }
    return sweep_config(ablation_config(arg.scale), cells)
