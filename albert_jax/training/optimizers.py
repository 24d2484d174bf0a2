"""Optimizers: LAMB as in google-research/albert (pretraining) and AdamW (fine-tuning), built from optax.

Both: global-norm clipping, linear warmup then linear decay to 0, weight decay that skips LayerNorm and
bias parameters (LAMB also skips them in the trust ratio, like the original `exclude_from_layer_adaptation`),
and gradient accumulation with `optax.MultiSteps`.
"""

from __future__ import annotations

import jax
import ml_collections
import optax
from flax import traverse_util


def decay_mask(params) -> dict:
    """True for parameters that get weight decay (and LAMB's trust ratio): not LayerNorm, not biases."""

    def wants_decay(path):
        return path[-1] != "bias" and not any("LayerNorm" in p or "layer_norm" in p for p in path)

    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({path: wants_decay(path) for path in flat})


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warmup from 0 over `warmup_steps`, then linear decay to 0 at `total_steps` (optimizer steps)."""
    warmup = max(int(config.warmup_steps), 0)
    decay_steps = max(int(config.total_steps) - warmup, 1)
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, config.learning_rate, max(warmup, 1)),
            optax.linear_schedule(config.learning_rate, 0.0, decay_steps),
        ],
        boundaries=[warmup],
    )


def create_optimizer(config: ml_collections.ConfigDict, params) -> optax.GradientTransformation:
    """The optimizer named by `config.optimizer` ('lamb' or 'adamw'), wrapped in MultiSteps when
    `config.grad_accum_steps > 1`. `config` holds optimizer, learning_rate, warmup_steps, total_steps,
    weight_decay, b1, b2, eps, clip_norm, grad_accum_steps."""
    schedule = learning_rate_schedule(config)
    mask = decay_mask(params)
    adam = optax.scale_by_adam(b1=config.b1, b2=config.b2, eps=config.eps)
    decay = optax.add_decayed_weights(config.weight_decay, mask=mask)
    if config.optimizer == "lamb":
        steps = [adam, decay, optax.masked(optax.scale_by_trust_ratio(), mask)]
    elif config.optimizer == "adamw":
        steps = [adam, decay]
    else:
        raise ValueError(f"config.optimizer.optimizer must be 'lamb' or 'adamw', got {config.optimizer!r}")
    clip = [optax.clip_by_global_norm(config.clip_norm)] if config.clip_norm else []
    tx = optax.chain(*clip, *steps, optax.scale_by_learning_rate(schedule))
    if config.grad_accum_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=config.grad_accum_steps)
    return tx


def current_learning_rate(config: ml_collections.ConfigDict, optimizer_step) -> jax.Array:
    """The scheduled learning rate at `optimizer_step` (for logging)."""
    return learning_rate_schedule(config)(optimizer_step)
