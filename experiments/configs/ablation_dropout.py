"""The paper's dropout finding (its Table 8): removing dropout helps a large model that does not overfit its data, on
ALBERT-xxlarge at `scale=paper`, on the demo's small model at `scale=demo`; with dropout is 0.1 on the hidden states
and the attention probabilities (BERT's), without is 0 (the released ALBERT v2 models).

    python experiments/ablate.py --config=experiments/configs/ablation_dropout.py:scale=demo --workdir=runs/dropout \
        --seeds=3

The paper (ALBERT-xxlarge at the same training time; avg of SQuAD1.1, SQuAD2.0, MNLI, SST-2, RACE): with dropout
90.4, without 90.7. At the demo's few hundred steps nothing overfits either, so the same direction is expected, if
anything; the paper's model trained for 1M steps.
"""

from albert_jax.experiment import parse_arg
from albert_jax.training.pretrain import ablation_config, paper_config
from albert_jax.training.sweep import sweep_config


def get_config(arg=None):
    arg = parse_arg(arg, scale="demo")
    base = paper_config("xxlarge") if arg.scale == "paper" else ablation_config(arg.scale)
    cells = {
        f"dropout{p}": {"model": {"hidden_dropout_prob": p, "attention_probs_dropout_prob": p}} for p in (0.1, 0.0)
    }
    return sweep_config(base, cells, paper_model="albert-xxlarge-v2")
