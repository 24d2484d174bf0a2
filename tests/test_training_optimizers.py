"""albert_jax.training.optimizers: LAMB's weight decay mask and the learning rate schedule."""

import numpy as np

from albert_jax.training import optimizers


def test_lamb_excludes_layernorm_and_bias_from_decay_and_trust_ratio():
    params = {"dense": {"kernel": np.ones((2, 2)), "bias": np.ones(2)}, "LayerNorm": {"scale": np.ones(2)}}
    mask = optimizers.decay_mask(params)
    assert mask == {"dense": {"kernel": True, "bias": False}, "LayerNorm": {"scale": False}}


def test_schedule_warmup_then_linear_decay():
    import ml_collections

    config = ml_collections.ConfigDict(dict(learning_rate=1.0, warmup_steps=10, total_steps=110))
    schedule = optimizers.learning_rate_schedule(config)
    np.testing.assert_allclose(
        [schedule(0), schedule(5), schedule(10), schedule(60), schedule(110)], [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6
    )
