"""SQuAD v1.1 / v2.0 fine-tuning as google-research/albert's README runs it: windows of 384 tokens,
doc_stride 128, questions of at most 64 tokens, AdamW, batch 48; v1.1 lr 5e-5, 3649 steps (2 epochs),
365 warmup; v2.0 lr 3e-5, 8144 steps, 814 warmup. n-best 20, answers of at most 30 tokens.

    python run.py --config=experiments/configs/squad.py:version=2.0 --workdir=runs/squad2 \
        --config.data.squad_train_file=train-v2.0.json --config.data.squad_dev_file=dev-v2.0.json
    python run.py --config=experiments/configs/squad.py:version=1.1,runlocal=True --workdir=runs/squad_local \
        --config.data.squad_train_file=... --config.data.squad_dev_file=...   # tiny: from runs/demo

Or --config.data.source=tfds (squad/v1.1, squad/v2.0). Writes predictions.json, nbest_predictions.json
and (v2.0) null_odds.json into the work dir; evaluation rows carry the official v2.0 script's keys
(exact, f1, HasAns_*, NoAns_*, best_exact, best_f1 and their thresholds); <workdir>/best/ holds the model of
the evaluation with the best F1 (set eval_every to evaluate more than at the end).

ALBERT-base-v2 dev results (model card): SQuAD1.1 90.2/83.2, SQuAD2.0 82.1/79.3 (F1/EM).
"""

from albert_jax.experiment import parse_arg
from albert_jax.training.finetune import default_config

# version: (warmup steps, learning rate, train steps)
PAPER = {"1.1": (365, 5e-5, 3649), "2.0": (814, 3e-5, 8144)}


def get_config(arg=None):
    arg = parse_arg(arg, version="2.0", runlocal=False)
    if arg.version not in PAPER:
        raise ValueError(f"version must be one of {sorted(PAPER)}, got {arg.version!r}")
    c = default_config()
    c.task = "squad"
    c.data.squad_version = arg.version
    c.optimizer.warmup_steps, c.optimizer.learning_rate, c.total_steps = PAPER[arg.version]
    c.batch_size = 48
    c.data.max_seq_length, c.data.doc_stride, c.data.max_query_length = 384, 128, 64
    c.eval_every, c.checkpoint_every = 0, 1000
    c.best_metric = "f1"
    if arg.runlocal:
        c.init_from = "runs/demo"
        c.total_steps, c.batch_size, c.log_every, c.checkpoint_every = 60, 16, 10, 30
        c.optimizer.warmup_steps, c.optimizer.learning_rate = 6, 1e-3
        c.data.max_seq_length, c.data.doc_stride, c.data.max_query_length = 64, 24, 16
        c.data.max_train_examples, c.data.max_eval_examples = 2000, 300
    return c
