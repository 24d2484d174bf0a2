"""A pretraining run small enough for the test suite (seconds per run on one CPU core)."""

from albert_jax.experiment import model_section
from albert_jax.training.pretrain import default_config


def get_config():
    c = default_config()
    c.total_steps = 8
    c.batch_size = 8
    c.log_every = 1
    c.eval_every = 4
    c.checkpoint_every = 2
    c.model = model_section(
        "albert-tiny",
        vocab_size=600,
        embedding_size=16,
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
        num_hidden_layers=2,
        max_position_embeddings=64,
    )
    c.data.max_documents = 150
    c.data.max_seq_length = 32
    c.data.max_predictions_per_seq = 5
    c.data.eval_fraction = 0.1
    c.data.eval_batches = 2
    c.optimizer.learning_rate = 0.01
    c.optimizer.warmup_steps = 2
    return c
