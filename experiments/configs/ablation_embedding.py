"""The paper's Table 3: embedding size E in {64, 128, 256, 768}, not-shared (BERT-style) and all-shared
(ALBERT-style), on ALBERT-base dims at `scale=paper`, on the demo's small model at `scale=demo`.

    python experiments/ablate.py --config=experiments/configs/ablation_embedding.py:scale=demo --workdir=runs/embedding
    python experiments/ablate.py --config=experiments/configs/ablation_embedding.py:scale=paper \
        --workdir=runs/embedding --shard=0/4          # one of 4 machines; --cells=E128-all,E128-none picks cells

The paper (ALBERT-base, 125k steps; parameters / avg of SQuAD1.1, SQuAD2.0, MNLI, SST-2, RACE):
not-shared E=64 87M 81.3, E=128 89M 81.7, E=256 93M 81.8, E=768 108M 82.3;
all-shared E=64 10M 79.0, E=128 12M 80.1, E=256 16M 79.6, E=768 31M 79.8.
The table's `paper_parameters` column counts each cell on albert-base-v2 dims (30k vocabulary).
"""

from albert_jax.experiment import parse_arg
from albert_jax.training.pretrain import ablation_config
from albert_jax.training.sweep import sweep_config


def get_config(arg=None):
    arg = parse_arg(arg, scale="demo")
    cells = {
        f"E{e}-{sharing}": {"model": {"embedding_size": e, "sharing": sharing}}
        for sharing in ("none", "all")
        for e in (64, 128, 256, 768)
    }
    return sweep_config(ablation_config(arg.scale), cells)
