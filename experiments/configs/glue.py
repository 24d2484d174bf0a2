"""GLUE fine-tuning with the ALBERT paper's per-task hyperparameters (google-research/albert README:
AdamW, max_seq_length 512; warmup / learning rate / steps / batch below).

    python run.py --config=experiments/configs/glue.py:task=mnli --workdir=runs/mnli \
        --config.data.glue_dir=glue_data            # the official download; or --config.data.source=tfds
    python run.py --config=experiments/configs/glue.py:task=sst2,runlocal=True --workdir=runs/sst2_local \
        --config.data.glue_dir=glue_data            # tiny: fine-tunes the README demo's runs/demo

`init_from` defaults to `albert/albert-base-v2` from the local huggingface_hub cache (any transformers or
albert-jax directory, or a pretraining work dir, works: --config.init_from=runs/base). Evaluation rows in
metrics.jsonl carry the official metrics (accuracy; f1 for MRPC/QQP; mcc for CoLA; pearson/spearman for
STS-B; MNLI's mismatched dev set with the suffix _mismatched); test-set predictions in the leaderboard
format go to <workdir>/glue_submission/, and the model of the best evaluation by the metric
google-research/albert reports (`best_metric`: mcc for CoLA, pearson for STS-B, else accuracy, MNLI's
matched) to <workdir>/best/. Gradient accumulation (--config.optimizer.grad_accum_steps=4) runs the
paper's batch sizes on small machines.

ALBERT-base-v2 dev results (model card): MNLI 84.6, SST-2 92.9 (accuracy).
"""

from albert_jax.experiment import parse_arg
from albert_jax.training.finetune import default_config

# task: (warmup steps, learning rate, train steps, batch size)
PAPER = {
    "cola": (320, 1e-5, 5336, 16),
    "sst2": (1256, 1e-5, 20935, 32),
    "mrpc": (200, 2e-5, 800, 32),
    "stsb": (214, 2e-5, 3598, 16),
    "qqp": (1000, 5e-5, 14000, 128),
    "mnli": (1000, 3e-5, 10000, 128),
    "qnli": (1986, 1e-5, 33112, 32),
    "rte": (200, 3e-5, 800, 32),
    "wnli": (200, 2e-5, 800, 32),  # not in the paper's table: MRPC's settings (both are small pair tasks)
}
# the dev metric google-research/albert reports (best/ keeps its best evaluation); accuracy for the others
METRIC = {"cola": "mcc", "stsb": "pearson"}


def get_config(arg=None):
    arg = parse_arg(arg, task="mnli", runlocal=False)
    if arg.task not in PAPER:
        raise ValueError(f"task must be one of {sorted(PAPER)}, got {arg.task!r}")
    c = default_config()
    c.task = "glue"
    c.data.glue_task = arg.task
    warmup, lr, steps, batch = PAPER[arg.task]
    c.optimizer.warmup_steps, c.optimizer.learning_rate, c.total_steps, c.batch_size = warmup, lr, steps, batch
    c.data.max_seq_length = 512
    c.eval_every = c.checkpoint_every = 1000
    c.best_metric = METRIC.get(arg.task, "accuracy")
    if arg.runlocal:
        c.init_from = "runs/demo"
        c.total_steps, c.batch_size, c.log_every, c.eval_every, c.checkpoint_every = 60, 16, 10, 30, 30
        c.optimizer.warmup_steps, c.optimizer.learning_rate = 6, 1e-3
        c.data.max_seq_length = 64
        c.data.max_train_examples, c.data.max_eval_examples = 2000, 500
    return c
