"""ALBERT pretraining (MLM + SOP, or + NSP, or MLM alone: `data.sentence_objective`): the config, the task for
the train loop, and `run`.

`run(config, workdir)` does everything the demo shows: claim the work dir -> prepared data (`data.prepare`:
streamed source, SentencePiece vocabulary, example shards; made into `<workdir>/data` unless
`data.prepared_dir` holds them) -> the grain loader (`data.loader`) -> `loop.train` -> `final/`, optional HF
export and fill-mask predictions.

Every evaluation measures the one sentence-relation head (`sop_logits`) on both held-out sets, whatever the
objective trained: `sop_*` on the `eval` split (SOP pairs, also the set of `mlm_*`) and `nsp_*` on `eval_nsp`
(NSP pairs of the same documents; absent for a `tfrecord:` source), as the paper's Table 5 compares them.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import cast

import jax
import jax.numpy as jnp
import ml_collections
from ml_collections.config_dict import placeholder

from albert_jax import experiment, flops, modeling
from albert_jax.config import AlbertConfig
from albert_jax.data.manifest import sentence_objective
from albert_jax.training import export, initialization, loop, steps

FINGERPRINT = ("seed", "batch_size", "model", "data", "optimizer", "total_steps", "init_from", "init_from_skip")
# How the data is made and read, not what it is: a run may resume with other values.
_PROCESS_COUNTS = ("prepare_workers", "loader_workers")


def default_config() -> ml_collections.ConfigDict:
    """Every field a pretraining config has, with the paper's optimizer settings (the loop's own fields
    are in `loop.base_config`). Experiment configs start from this and change what they need."""
    c = loop.base_config()
    c.job = "pretrain"
    c.total_steps = 125_000
    c.batch_size = 4096
    c.eval_every = 5000
    c.checkpoint_every = 5000
    c.optimizer.warmup_steps = 3125
    c.model = experiment.model_section("albert-base-v2")
    c.data = ml_collections.ConfigDict(
        dict(
            # 'builtin', 'files:<glob>[,<glob>]', 'tfds:<name>[:<split>]' or 'tfrecord:<glob>[,<glob>]' (files of
            # google-research/albert's create_pretraining_data.py, used as they are: needs vocab_file)
            source="builtin",
            tfds_data_dir=placeholder(str),  # tfds data_dir
            max_documents=placeholder(int),  # keep only the first N documents (quick experiments)
            vocab_file=placeholder(str),  # an existing spiece.model; None: train one on the training documents
            spm_sentences=2_000_000,  # sentences sampled (while streaming) for SentencePiece training
            prepared_dir=placeholder(str),  # prepared data (python -m albert_jax.data.prepare); None: <workdir>/data
            docs_per_shard=1000,  # documents per example shard (the unit of parallel work and of resuming)
            prepare_workers=0,  # processes making examples; 0: one per CPU
            loader_workers=0,  # grain worker processes decoding/masking batches; 0: in the main process
            masking="static",  # 'static': masks fixed when prepared (the original); 'dynamic': per epoch
            max_seq_length=512,
            max_predictions_per_seq=20,
            masked_lm_prob=0.15,
            short_seq_prob=0.1,
            ngram=3,
            dupe_factor=1,  # passes over the corpus with different masks
            sentence_objective="sop",  # 'sop' (ALBERT), 'nsp' (BERT's next-sentence prediction) or 'none' (MLM only)
            seed=placeholder(int),  # seed of the prepared data (vocabulary, split, examples); None: config.seed
            eval_fraction=0.02,  # share of documents held out for evaluation
            eval_batches=20,  # held-out batches per evaluation (at most)
        )
    )
    c.export = ml_collections.ConfigDict(
        dict(
            hf_dir=placeholder(str),  # relative to the work dir; None: no export
            fill_mask=(),  # sentences with [MASK] to complete after training
        )
    )
    return c


def paper_config(size: str) -> ml_collections.ConfigDict:
    """The paper's pretraining setup for ALBERT-{base,large,xlarge,xxlarge} (v2 shapes), or for its BERT
    baselines ('bert-base', 'bert-large': E = H, nothing shared): sequences of 512, batch 4096, 125k LAMB steps
    at lr 0.00176 with 3125 warmup steps, 20 predictions per sequence, on English Wikipedia from tfds (the
    paper also used BookCorpus, which tfds does not ship)."""
    c = default_config()
    c.model = experiment.model_section(f"{size}-equivalent" if size.startswith("bert-") else f"albert-{size}-v2")
    c.data.source = "tfds:wikipedia/20230601.en"
    return c


def demo_config() -> ml_collections.ConfigDict:
    """The README demo's setup: a small ALBERT (E=64, H=128, 4 shared layers, 6k vocabulary) pretrained for
    600 steps of 64 x 64 tokens on the built-in corpus, a few minutes on a 2-core CPU."""
    c = default_config()
    c.total_steps, c.batch_size, c.log_every, c.eval_every, c.checkpoint_every = 600, 64, 25, 200, 200
    c.model = experiment.model_section(
        "albert-tiny", vocab_size=6000, hidden_size=128, intermediate_size=512, num_attention_heads=2
    )
    # Docstring documents are short (a 128-token pair would be half padding): 64 tokens, 10 predictions.
    c.data.max_seq_length, c.data.max_predictions_per_seq = 64, 10
    c.data.dupe_factor, c.data.spm_sentences, c.data.eval_batches = 5, 200_000, 8
    c.optimizer.learning_rate, c.optimizer.warmup_steps = 0.01, 60
    return c


def ablation_config(scale: str) -> ml_collections.ConfigDict:
    """The pretraining setup the paper's ablations share. 'paper': ALBERT-base dims, the paper's 125k
    steps on tfds Wikipedia. 'demo': the demo's model (`demo_config`) for 300 steps, one to two minutes per run
    on a 2-core CPU, evaluated once at the end on 5% of the documents held out (about a thousand pairs, so that
    an accuracy's sampling error is near 0.015)."""
    if scale == "paper":
        return paper_config("base")
    if scale != "demo":
        raise ValueError(f"scale must be 'demo' or 'paper', got {scale!r}")
    c = demo_config()
    c.total_steps, c.eval_every, c.checkpoint_every = 300, 300, 100
    c.data.dupe_factor, c.optimizer.warmup_steps = 2, 30
    c.data.eval_fraction, c.data.eval_batches = 0.05, 16
    return c


def check_source(spec: str) -> None:
    """ValueError for a `data.source` of an unknown kind or with a file pattern that matches no file (a tfds
    name is checked when the data is prepared): cheap, so a run is refused before its work dir is claimed."""
    from albert_jax.data import sources

    kind, _, rest = spec.partition(":")
    if kind in ("files", "tfrecord") and rest:
        try:
            sources.expand_patterns([p for p in rest.split(",") if p])
        except ValueError as e:
            raise ValueError(f"config.data.source: {e}") from None
    elif not ((kind == "builtin" and not rest) or (kind == "tfds" and rest)):
        raise ValueError(
            f"config.data.source must be 'builtin', 'files:<glob>[,<glob>]', 'tfds:<name>[:<split>]' or "
            f"'tfrecord:<glob>[,<glob>]', got {spec!r}"
        )


def validate(config: ml_collections.ConfigDict, albert_config: AlbertConfig) -> None:
    """Pretraining config errors caught before any compute."""
    sentence_objective(config)
    experiment.check_max_seq_length(config, albert_config)
    if config.data.max_predictions_per_seq > config.data.max_seq_length:
        raise ValueError("config.data.max_predictions_per_seq cannot exceed config.data.max_seq_length")


# ---------------------------------------------------------------------------------------------------------
# Loss, predictions and metrics
# ---------------------------------------------------------------------------------------------------------
def pretraining_stats(model: modeling.AlbertForPreTraining, params, batch, dropout_rng, deterministic: bool):
    """Per-example statistics [B] of the original ALBERT losses: summed masked-LM NLL, correct and
    counted predictions (weighted), and the sentence-relation head's (`sop_logits`) NLL and correctness on
    `sentence_order_label`, named `sop_*` after the head whatever the pairs are (SOP or NSP)."""
    out = cast(
        modeling.AlbertForPreTrainingOutput,
        model.apply(
            {"params": params},
            batch["input_ids"],
            batch["attention_mask"],
            batch["token_type_ids"],
            deterministic=deterministic,
            rngs={"dropout": dropout_rng},
            masked_lm_positions=batch["masked_lm_positions"],
        ),
    )
    mlm_logp = jax.nn.log_softmax(out.prediction_logits.astype(jnp.float32))
    mlm_nll = -jnp.take_along_axis(mlm_logp, batch["masked_lm_ids"][..., None], -1)[..., 0]
    weights = batch["masked_lm_weights"].astype(jnp.float32)
    sop_logp = jax.nn.log_softmax(out.sop_logits.astype(jnp.float32))
    labels = batch["sentence_order_label"]
    return dict(
        mlm_loss=jnp.sum(mlm_nll * weights, -1),
        mlm_correct=jnp.sum((mlm_logp.argmax(-1) == batch["masked_lm_ids"]) * weights, -1),
        mlm_count=jnp.sum(weights, -1),
        sop_loss=-jnp.take_along_axis(sop_logp, labels[:, None], -1)[:, 0],
        sop_correct=(sop_logp.argmax(-1) == labels).astype(jnp.float32),
        sop_count=jnp.ones(labels.shape, jnp.float32),
    )


def pretraining_loss(
    model: modeling.AlbertForPreTraining, params, batch, dropout_rng, deterministic: bool, objective: str = "sop"
):
    """The original ALBERT losses: MLM = weighted mean NLL over real predictions, sentence = mean NLL of the
    batch's labels (SOP or NSP pairs: the same loss), total = their sum; for `objective` 'none' the total is
    the MLM loss alone (the sentence head gets no gradient).

    Returns (loss, sums) where sums are additive statistics for `summarize_pretraining`.
    """
    stats = pretraining_stats(model, params, batch, dropout_rng, deterministic)
    sums = {k: jnp.sum(v) for k, v in stats.items()}
    loss = sums["mlm_loss"] / (sums["mlm_count"] + 1e-5)
    if objective != "none":
        loss = loss + sums["sop_loss"] / sums["sop_count"]
    return loss, sums


def summarize_pretraining(sums: dict, objective: str = "sop") -> dict:
    """Additive sums of a batch of `objective`'s pairs -> loss, mlm_loss, {objective}_loss, mlm_accuracy,
    {objective}_accuracy (the sentence head's metrics named by the pairs: sop_* or nsp_*); for 'none' loss,
    mlm_loss and mlm_accuracy only (loss = mlm_loss)."""
    mlm_loss = sums["mlm_loss"] / max(sums["mlm_count"], 1e-5)
    mlm_accuracy = float(sums["mlm_correct"] / max(sums["mlm_count"], 1e-5))
    if objective == "none":
        return dict(loss=float(mlm_loss), mlm_loss=float(mlm_loss), mlm_accuracy=mlm_accuracy)
    sentence_loss = sums["sop_loss"] / max(sums["sop_count"], 1)
    return {
        "loss": float(mlm_loss + sentence_loss),
        "mlm_loss": float(mlm_loss),
        f"{objective}_loss": float(sentence_loss),
        "mlm_accuracy": mlm_accuracy,
        f"{objective}_accuracy": float(sums["sop_correct"] / max(sums["sop_count"], 1)),
    }


def held_out_metrics(held_out: dict[str, dict], objective: str, predict: steps.Predict) -> dict:
    """One evaluation row, `predict` running `pretraining_stats` over arrays [N, ...]: mlm_* and sop_* on the
    held-out SOP pairs (`held_out['sop']`), nsp_* on the NSP pairs (`held_out['nsp']`, when the data has them),
    `loss` = mlm_loss + the trained `objective`'s loss on its pairs (mlm_loss alone for 'none'), and
    `num_examples` (SOP pairs)."""
    measured = {
        kind: summarize_pretraining({k: float(v.sum()) for k, v in predict(arrays).items()}, kind)
        for kind, arrays in held_out.items()
    }
    row = dict(measured["sop"])
    row["loss"] = row["mlm_loss"] + (measured[objective][f"{objective}_loss"] if objective != "none" else 0.0)
    if "nsp" in measured:
        row.update(nsp_loss=measured["nsp"]["nsp_loss"], nsp_accuracy=measured["nsp"]["nsp_accuracy"])
    return dict(row, num_examples=len(held_out["sop"]["input_ids"]))


# ---------------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------------
def example_spec(config: ml_collections.ConfigDict) -> dict:
    """A pretraining batch's rows (what the loader yields): key -> (shape, dtype)."""
    seq, predictions = config.data.max_seq_length, config.data.max_predictions_per_seq
    return {
        "input_ids": ((seq,), "int32"),
        "attention_mask": ((seq,), "int32"),
        "token_type_ids": ((seq,), "int32"),
        "masked_lm_positions": ((predictions,), "int32"),
        "masked_lm_ids": ((predictions,), "int32"),
        "masked_lm_weights": ((predictions,), "float32"),
        "sentence_order_label": ((), "int32"),
    }


def model_task(config: ml_collections.ConfigDict, albert_config: AlbertConfig) -> steps.Task:
    """The task without its data (no batches, no evaluation): what planning compiles, and `build_task`
    completes."""
    model = modeling.AlbertForPreTraining(albert_config)
    seq, predictions = config.data.max_seq_length, config.data.max_predictions_per_seq
    objective = sentence_objective(config)
    return steps.Task(
        loss_fn=lambda params, batch, rng, det: pretraining_loss(model, params, batch, rng, det, objective),
        summarize=functools.partial(summarize_pretraining, objective=objective),
        init_params=lambda rng: modeling.boxed_params(model, rng, seq),
        train_batches=None,
        predict_fn=lambda params, batch: pretraining_stats(model, params, batch, jax.random.PRNGKey(0), True),
        example_spec=example_spec(config),
        flops_per_example=flops.model_flops(albert_config, 1, seq, "pretraining", predictions, training=True),
    )


def build_task(config: ml_collections.ConfigDict, albert_config: AlbertConfig, workdir: str):
    """(task, tokenizer) for `config`: prepares the data if needed, then reads it with the grain loader."""
    from albert_jax.data import loader, prepare
    from albert_jax.tokenizer import AlbertTokenizer, check_vocab_size

    directory = prepare.ensure_prepared(config, workdir, albert_config.vocab_size)
    manifest = prepare.read_manifest(directory)
    tokenizer = AlbertTokenizer(os.path.join(directory, manifest["vocab_file"]))
    check_vocab_size(tokenizer, albert_config.vocab_size)
    micro = config.batch_size // config.optimizer.grad_accum_steps
    train_data = loader.PretrainingDataset(directory, "train", config.data, config.seed)
    limit = config.data.eval_batches * loop.eval_batch_size(config)
    held_out = {}  # the held-out pairs by kind; each set's dynamic masks from a seed of its own
    for offset, (kind, split) in enumerate((("sop", "eval"), ("nsp", "eval_nsp")), 1):
        if limit and manifest["examples"].get(split):
            data = loader.PretrainingDataset(directory, split, config.data, config.seed + offset)
            held_out[kind] = data.first(min(data.size, limit))
    evaluate = functools.partial(held_out_metrics, held_out, sentence_objective(config))
    task = dataclasses.replace(
        model_task(config, albert_config),
        train_batches=loader.PretrainingBatches(train_data, micro, workers=config.data.loader_workers),
        evaluate=evaluate if held_out else None,
    )
    return task, tokenizer


def run(config: ml_collections.ConfigDict, workdir: str, *, overwrite: bool = False, resume: bool = True):
    """Pretrains as configured (continuing from `config.init_from`'s weights when set); then writes
    `final/`, exports to HF and prints fill-mask predictions if configured. Returns (AlbertConfig, final
    params as numpy). A run stopped by a signal raises (`loop.train`) and writes none of them."""
    from albert_jax.data import prepare

    albert_config = experiment.albert_config(config.model)
    validate(config, albert_config)
    if not os.path.exists(os.path.join(prepare.prepared_dir(config, workdir), prepare.MANIFEST)):
        check_source(config.data.source)
    init_from = initialization.resolve(config.init_from) if config.init_from else None
    fingerprint = experiment.fingerprint(config, FINGERPRINT)
    fingerprint["data"] = {k: v for k, v in fingerprint["data"].items() if k not in _PROCESS_COUNTS}
    with loop.claim_run(config, workdir, fingerprint, overwrite) as mesh:
        task, tokenizer = build_task(config, albert_config, workdir)
        state = loop.train(config, workdir, task, mesh, resume=resume, init_from=init_from)
        params = loop.host_params(state.params)
        if jax.process_index() == 0:
            export.save_final(albert_config, params, tokenizer, workdir, config.total_steps)
            if config.export.hf_dir:
                hf_dir = os.path.join(workdir, config.export.hf_dir)
                export.export_hf(albert_config, params, tokenizer, hf_dir, config.total_steps)
            if config.export.fill_mask:
                export.show_fill_mask(albert_config, params, tokenizer, list(config.export.fill_mask))
    return albert_config, params
