"""ALBERT pretraining as in the paper (Lan et al. 2019, section 4.1): seq 512, batch 4096, 125k steps,
LAMB lr 0.00176, English Wikipedia from tfds. `size` is base, large, xlarge or xxlarge (v2 shapes), or the
paper's BERT baselines bert-base and bert-large (E = H, nothing shared).

    python run.py --config=experiments/configs/pretrain.py:size=base --workdir=runs/pretrain_base \
        [--config.optimizer.grad_accum_steps=16] [--config.mesh.fsdp=8] [--config.model.dtype=bfloat16]
    python run.py --config=experiments/configs/pretrain.py:size=base,runlocal=True --workdir=runs/local

`runlocal=True` keeps the model's shape but trains 20 steps of 8 x 64 tokens on the built-in corpus with a
2k vocabulary: seconds on a CPU, to check a setup end to end.

Paper's result for each size after 125k steps (Table 2, avg of SQuAD1.1/2.0, MNLI, SST-2, RACE):
base 80.1, large 82.4, xlarge 85.5, xxlarge 88.7.
"""

from albert_jax.experiment import parse_arg
from albert_jax.training.pretrain import paper_config

SIZES = ("base", "large", "xlarge", "xxlarge", "bert-base", "bert-large")


def get_config(arg=None):
    arg = parse_arg(arg, size="base", runlocal=False)
    if arg.size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {arg.size!r}")
    c = paper_config(arg.size)
    if arg.runlocal:
        c.total_steps, c.batch_size, c.log_every, c.eval_every, c.checkpoint_every = 20, 8, 5, 20, 20
        c.optimizer.warmup_steps = 2
        c.model.vocab_size = 2000
        c.data.source = "builtin"
        c.data.max_documents = 300
        c.data.spm_sentences = 20_000
        c.data.max_seq_length = 64
        c.data.max_predictions_per_seq = 10
        c.data.eval_batches = 2
    return c
