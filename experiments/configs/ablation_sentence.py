"""The paper's Table 5: the inter-sentence objective, none (MLM only, as XLNet and RoBERTa), NSP (BERT's next
sentence prediction) or SOP (ALBERT's sentence order), on ALBERT-base at `scale=paper`, on the demo's small model
at `scale=demo`. Every evaluation measures MLM accuracy and both sentence tasks with the one sentence-relation head,
whatever the objective trained (`config.data.sentence_objective`); cells are compared with `nsp`, the objective SOP
replaces.

    python experiments/ablate.py --config=experiments/configs/ablation_sentence.py:scale=demo --workdir=runs/sentence \
        --seeds=3

The paper (ALBERT-base, 125k steps; intrinsic MLM / NSP / SOP accuracy, then the avg of SQuAD1.1, SQuAD2.0, MNLI,
SST-2, RACE): none 54.0 / 52.4 / 53.3, 79.0; NSP 54.5 / 90.5 / 52.0, 79.2; SOP 54.0 / 78.9 / 86.5, 80.1. NSP does not
solve SOP (chance), SOP solves NSP to a good extent, and SOP helps downstream.
"""

from albert_jax.experiment import parse_arg
from albert_jax.training.pretrain import ablation_config
from albert_jax.training.sweep import sweep_config


def get_config(arg=None):
    arg = parse_arg(arg, scale="demo")
    cells = {objective: {"data": {"sentence_objective": objective}} for objective in ("none", "nsp", "sop")}
    return sweep_config(ablation_config(arg.scale), cells, reference="nsp")
