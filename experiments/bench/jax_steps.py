"""albert-jax's side: the workload's model loaded from the exported HF directory, a jitted forward or one step
of the training loop (`albert_jax.training.steps.train_step` with an optax AdamW), each call blocking until its
result is ready."""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import albert_jax as aj
from albert_jax import convert
from albert_jax.training import optimizers, pretrain, steps

from .workloads import OPTIMIZER, Workload, make_inputs

HEADS = {"backbone": aj.AlbertModel, "pretraining": aj.AlbertForPreTraining, "qa": aj.AlbertForQuestionAnswering}


def load(hf_dir: str, w: Workload, dtype: str):
    """(module, params) of `w.head` from a transformers directory, computing in `dtype` (params float32)."""
    config, params = convert.load_hf(hf_dir)
    config = config.replace(dtype=dtype, **({"num_hidden_layers": w.layers} if w.layers else {}))
    if w.head == "backbone":
        params = {"albert": params["albert"]}
    return HEADS[w.head](config), params


def _ce(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels).mean()


def loss_fn(model, w: Workload):
    """`w`'s loss as a training Task's loss_fn: (params, inputs, dropout_rng, deterministic) -> (scalar loss,
    {'loss': it}) (see workloads.Workload)."""
    if w.loss == "mlm_masked_sop":

        def loss(params, x, rng, deterministic):  # the original losses, as albert-jax pretrains: x is its batch
            value = pretrain.pretraining_loss(model, params, x, rng, deterministic)[0]
            return value, {"loss": value}

        return loss

    def loss(params, x, rng, deterministic):
        out = model.apply(
            {"params": params},
            x["input_ids"],
            x["attention_mask"],
            x["token_type_ids"],
            deterministic=deterministic,
            rngs={"dropout": rng},
        )
        if w.loss == "mlm_all_sop":
            value = _ce(out.prediction_logits, x["mlm_labels"]) + _ce(out.sop_logits, x["sentence_order_label"])
        elif w.loss == "span":
            value = (_ce(out.start_logits, x["start_positions"]) + _ce(out.end_logits, x["end_positions"])) / 2
        else:
            raise ValueError(f"no loss {w.loss!r}")
        return value, {"loss": value}

    return loss


def make_optimizer(params) -> optax.GradientTransformation:
    o = OPTIMIZER
    return optax.chain(
        optax.clip_by_global_norm(o["clip_norm"]),
        optax.adamw(
            o["learning_rate"],
            o["b1"],
            o["b2"],
            o["eps"],
            weight_decay=o["weight_decay"],
            mask=optimizers.decay_mask(params),
        ),
    )


class Forward:
    """`runner()` runs the jitted backbone forward once; `outputs()` gives last_hidden_state and
    pooler_output as float32 numpy."""

    def __init__(self, hf_dir: str, w: Workload, dtype: str):
        model, params = load(hf_dir, w, dtype)
        self.params = jax.device_put(params)
        self.inputs = [
            jax.device_put(make_inputs(w, model.config.vocab_size)[k])
            for k in ("input_ids", "attention_mask", "token_type_ids")
        ]
        self.fn = jax.jit(lambda p, *x: model.apply({"params": p}, *x))

    def __call__(self):
        jax.block_until_ready(self.fn(self.params, *self.inputs))

    def outputs(self) -> dict:
        out = self.fn(self.params, *self.inputs)
        return {
            "last_hidden_state": np.asarray(out.last_hidden_state, np.float32),
            "pooler_output": np.asarray(out.pooler_output, np.float32),
        }


class TrainStep:
    """`runner()` runs one step of albert-jax's training loop (`steps.train_step`: loss, gradients, the
    non-finite guard, the AdamW update; the state donated, as the loop jits it) and returns the loss before the
    update; `compile()` times lowering and compiling the same step."""

    def __init__(self, hf_dir: str, w: Workload, dtype: str):
        model, params = load(hf_dir, w, dtype)
        self.config = model.config
        tx = make_optimizer(params)
        self._step = functools.partial(
            steps.train_step, loss_fn=loss_fn(model, w), tx=tx, dropout_root=jax.random.PRNGKey(0)
        )
        self.batch = jax.device_put(make_inputs(w, model.config.vocab_size))
        self.state = jax.device_put(
            steps.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
        )
        self.jit_step = jax.jit(self._step, donate_argnums=0)

    def __call__(self) -> float:
        self.state, sums = self.jit_step(self.state, self.batch)
        return float(sums["loss"])

    def compile(self) -> dict:
        """Seconds to lower (trace + StableHLO) and to compile the train step, and XLA's memory estimate."""
        start = time.perf_counter()
        lowered = jax.jit(self._step, donate_argnums=0).lower(self.state, self.batch)
        lowered_at = time.perf_counter()
        compiled = lowered.compile()
        done = time.perf_counter()
        out = dict(seconds=done - start, lower_seconds=lowered_at - start, compile_seconds=done - lowered_at)
        memory = compiled.memory_analysis()
        if memory is not None:
            out["xla_temp_bytes"] = int(memory.temp_size_in_bytes)
        return out
