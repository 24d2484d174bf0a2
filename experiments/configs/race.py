"""RACE fine-tuning as google-research/albert's README runs it: 4-way multiple choice over
[CLS] article [SEP] question+option [SEP] of 512 tokens (question+option at most 128), AdamW lr 1e-5,
batch 32, 12000 steps, 1000 warmup.

    python run.py --config=experiments/configs/race.py --workdir=runs/race --config.data.race_dir=RACE
    python run.py --config=experiments/configs/race.py:runlocal=True --workdir=runs/race_local \
        --config.data.race_dir=RACE                 # tiny: from runs/demo

Or --config.data.source=tfds (race/middle, race/high). Evaluation rows carry accuracy, accuracy_middle
and accuracy_high; <workdir>/best/ holds the model of the evaluation with the best accuracy.
ALBERT-base-v2 (model card): RACE 66.8 accuracy.
"""

from albert_jax.experiment import parse_arg
from albert_jax.training.finetune import default_config


def get_config(arg=None):
    arg = parse_arg(arg, runlocal=False)
    c = default_config()
    c.task = "race"
    c.optimizer.warmup_steps, c.optimizer.learning_rate, c.total_steps, c.batch_size = 1000, 1e-5, 12000, 32
    c.data.max_seq_length, c.data.max_qa_length = 512, 128
    c.eval_every, c.checkpoint_every = 2000, 1000
    c.best_metric = "accuracy"
    if arg.runlocal:
        c.init_from = "runs/demo"
        c.total_steps, c.batch_size, c.log_every, c.eval_every, c.checkpoint_every = 40, 8, 10, 40, 40
        c.optimizer.warmup_steps, c.optimizer.learning_rate = 4, 1e-3
        c.data.max_seq_length, c.data.max_qa_length = 64, 24
        c.data.max_train_examples, c.data.max_eval_examples = 500, 200
    return c
