"""ALBERT-large pretraining as in the paper (Lan et al. 2019, section 4.1): seq 512, batch 4096, 125k steps,
LAMB lr 0.00176, English Wikipedia from tfds.

    python run.py --config=experiments/configs/pretrain_large.py --workdir=runs/pretrain_large \
        [--config.optimizer.grad_accum_steps=16] [--config.mesh.fsdp=8] [--config.model.dtype=bfloat16]

Paper's result for this size after 125k steps (Table 2, avg of SQuAD1.1/2.0, MNLI, SST-2, RACE):
base 80.1, large 82.4, xlarge 85.5, xxlarge 88.7.
"""

from albert_jax.training.pretrain import paper_config


def get_config():
    return paper_config("large")
