"""The paper's Table 6: depth of the all-shared network, L in {1, 3, 6, 12, 24, 48}, on ALBERT-large at
`scale=paper`, on the demo's small model (H = 128) at `scale=demo`. With every layer shared the parameter count does
not change with L (18M for ALBERT-large); the compute grows linearly with it.

    python experiments/ablate.py --config=experiments/configs/ablation_depth.py:scale=demo --workdir=runs/depth \
        --seeds=3                    # the demo's L=48 cell costs about 48 times the L=1 cell

The paper (ALBERT-large, all-shared, 125k steps; avg of SQuAD1.1, SQuAD2.0, MNLI, SST-2, RACE): 1 layer 52.9,
3 layers 71.2, 6 layers 77.2, 12 layers 81.5, 24 layers 82.1, 48 layers 81.8: deeper helps up to 24, then no more.
"""

from albert_jax.experiment import parse_arg
from albert_jax.training.pretrain import ablation_config, paper_config
from albert_jax.training.sweep import sweep_config

LAYERS = (1, 3, 6, 12, 24, 48)


def get_config(arg=None):
    arg = parse_arg(arg, scale="demo")
    base = paper_config("large") if arg.scale == "paper" else ablation_config(arg.scale)
    cells = {f"L{n}": {"model": {"num_hidden_layers": n}} for n in LAYERS}
    return sweep_config(base, cells, reference="L12", paper_model="albert-large-v2")
