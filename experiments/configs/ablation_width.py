"""The paper's Table 7: width of a 3-layer all-shared ALBERT-large, H in {1024, 2048, 4096, 6144} (FFN 4H, 64-wide
attention heads) at `scale=paper`; at `scale=demo` the demo's small model with 3 layers and the paper's widths
divided by 8, H in {128, 256, 512, 768}.

    python experiments/ablate.py --config=experiments/configs/ablation_width.py:scale=demo --workdir=runs/width \
        --seeds=3

The paper (3-layer ALBERT-large, 125k steps; parameters, avg of SQuAD1.1, SQuAD2.0, MNLI, SST-2, RACE): H=1024 18M
71.2, H=2048 60M 73.5, H=4096 225M 75.1, H=6144 499M 73.9: wider helps up to 4096, then it degrades.
"""

from albert_jax.experiment import parse_arg
from albert_jax.training.pretrain import ablation_config, paper_config
from albert_jax.training.sweep import sweep_config

PAPER_WIDTHS = (1024, 2048, 4096, 6144)
DEMO_DIVISOR = 8


def get_config(arg=None):
    arg = parse_arg(arg, scale="demo")
    base = paper_config("large") if arg.scale == "paper" else ablation_config(arg.scale)
    base.model.num_hidden_layers = 3
    widths = PAPER_WIDTHS if arg.scale == "paper" else tuple(h // DEMO_DIVISOR for h in PAPER_WIDTHS)
    cells = {
        f"H{h}": {"model": {"hidden_size": h, "intermediate_size": 4 * h, "num_attention_heads": h // 64}}
        for h in widths
    }
    return sweep_config(base, cells, paper_model="albert-large-v2")
