"""ALBERT pretraining (MLM + SOP): the config schema, the task for the train loop, and `run`.

`run(config, workdir)` does everything the demo shows: text source -> SentencePiece vocabulary (trained
into the work dir unless `data.vocab_file` is given) -> pretraining examples (cached in the work dir)
-> `loop.train` -> optional HF export and fill-mask predictions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from ml_collections.config_dict import placeholder

from albert_jax import modeling, pretrained
from albert_jax.config import AlbertConfig
from albert_jax.training import loop, sharding

# ---------------------------------------------------------------------------------------------------------
# Config schema
# ---------------------------------------------------------------------------------------------------------
def model_config(preset: str, **overrides) -> ml_collections.ConfigDict:
    """`model` config: a preset name plus every AlbertConfig field as an overridable placeholder
    (None = the preset's value), e.g. `--config.model.embedding_size=64 --config.model.sharing=ffn`."""
    defaults = AlbertConfig()
    fields = {"preset": preset}
    for f in dataclasses.fields(AlbertConfig):
        if f.name != "extra":
            fields[f.name] = placeholder(type(getattr(defaults, f.name)))
    config = ml_collections.ConfigDict(fields)
    config.update(overrides)
    return config


def build_model_config(model: ml_collections.ConfigDict) -> AlbertConfig:
    """AlbertConfig from a `model_config` ConfigDict (validated; errors name the field)."""
    overrides = {k: v for k, v in model.items() if k != "preset" and v is not None}
    return AlbertConfig.from_preset(model.preset, **overrides)


def default_config() -> ml_collections.ConfigDict:
    """Every field a pretraining config has, with the paper's optimizer settings. Experiment configs
    start from this and change what they need."""
    c = ml_collections.ConfigDict()
    c.seed = 0                       # everything (init, data, dropout) derives from it
    c.total_steps = 125_000          # optimizer steps
    c.batch_size = 4096              # global batch per optimizer step
    c.log_every = 100                # steps between training-metric rows
    c.eval_every = 5000              # steps between held-out evaluations (0 = never)
    c.checkpoint_every = 5000        # steps between checkpoints (and always at the end / on SIGTERM)
    c.keep_checkpoints = 3           # how many checkpoints to keep
    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})  # -1: all remaining devices
    c.sharding_rules = sharding.DEFAULT_RULES  # logical parameter axis -> mesh axis
    c.model = model_config("albert-base-v2")
    c.data = ml_collections.ConfigDict(dict(
        source="builtin",            # 'builtin', 'files:<glob>[,<glob>]' or 'tfds:<name>[:<split>]'
        tfds_data_dir=placeholder(str),  # tfds data_dir
        max_documents=placeholder(int),  # keep only the first N documents (quick experiments)
        vocab_file=placeholder(str),     # an existing spiece.model; None: train one into the work dir
        spm_sentences=2_000_000,     # sentences sampled for SentencePiece training
        max_seq_length=512,
        max_predictions_per_seq=20,
        masked_lm_prob=0.15,
        short_seq_prob=0.1,
        ngram=3,
        dupe_factor=1,               # passes over the corpus with different masks
        eval_fraction=0.02,          # share of documents held out for evaluation
        eval_batches=20,             # held-out batches per evaluation (at most)
    ))
    c.optimizer = ml_collections.ConfigDict(dict(
        optimizer="lamb", learning_rate=0.00176, warmup_steps=3125, weight_decay=0.01,
        b1=0.9, b2=0.999, eps=1e-6, clip_norm=1.0, grad_accum_steps=1))
    c.export = ml_collections.ConfigDict(dict(
        hf_dir=placeholder(str),     # relative to the work dir; None: no export
        fill_mask=(),                # sentences with [MASK] to complete after training
    ))
    return c


def load_config(path: str) -> ml_collections.ConfigDict:
    """`get_config()` of an experiment config file (what `run.py --config=path` loads)."""
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def paper_config(size: str) -> ml_collections.ConfigDict:
    """The paper's pretraining setup for ALBERT-{base,large,xlarge,xxlarge} (v2 shapes): sequences of 512,
    batch 4096, 125k LAMB steps at lr 0.00176 with 3125 warmup steps, 20 predictions per sequence, on
    English Wikipedia from tfds (the paper also used BookCorpus, which tfds does not ship)."""
    c = default_config()
    c.model = model_config(f"albert-{size}-v2")
    c.data.source = "tfds:wikipedia/20230601.en"
    return c


def fingerprint(config: ml_collections.ConfigDict) -> dict:
    """What identifies a run: a work dir with another fingerprint is not resumed into."""
    keep = ("seed", "batch_size", "model", "data", "optimizer", "total_steps")
    return json.loads(json.dumps({k: config[k].to_dict() if hasattr(config[k], "to_dict") else config[k]
                                  for k in keep}))


def validate(config: ml_collections.ConfigDict, model_config_: AlbertConfig) -> None:
    """Config errors caught before any compute."""
    data = config.data
    if data.max_seq_length > model_config_.max_position_embeddings:
        raise ValueError(f"config.data.max_seq_length ({data.max_seq_length}) exceeds the model's "
                         f"max_position_embeddings ({model_config_.max_position_embeddings})")
    if data.max_predictions_per_seq > data.max_seq_length:
        raise ValueError("config.data.max_predictions_per_seq cannot exceed config.data.max_seq_length")
    for name in ("total_steps", "batch_size", "log_every"):
        if config[name] <= 0:
            raise ValueError(f"config.{name} must be positive, got {config[name]}")


# ---------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------
class ArrayBatches:
    """Deterministic batches over in-memory examples: epoch e visits the examples in the permutation
    drawn from (seed, e); batch i is the i-th run of `batch_size` examples of that endless stream."""

    def __init__(self, arrays: dict[str, np.ndarray], batch_size: int, seed: int):
        self.arrays, self.batch_size, self.seed = arrays, batch_size, seed
        self.size = len(next(iter(arrays.values())))
        if self.size < batch_size:
            raise ValueError(f"only {self.size} examples for a batch of {batch_size}: use a larger corpus, "
                             "a higher data.dupe_factor or a smaller batch_size")
        self._cached_epoch, self._cached_perm = -1, None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._cached_epoch:
            self._cached_epoch = epoch
            self._cached_perm = np.random.default_rng([self.seed, epoch]).permutation(self.size)
        return self._cached_perm

    def batch(self, index: int) -> dict[str, np.ndarray]:
        """The `index`-th batch: dict of [batch_size, ...] arrays."""
        positions = np.arange(index * self.batch_size, (index + 1) * self.batch_size)
        rows = np.concatenate([self._permutation(int(e))[positions[positions // self.size == e] % self.size]
                               for e in np.unique(positions // self.size)])
        return {k: v[rows] for k, v in self.arrays.items()}


def prepare_tokenizer(config: ml_collections.ConfigDict, documents, workdir: str, vocab_size: int):
    """The run's tokenizer: `data.vocab_file`, or a SentencePiece model trained once into the work dir
    (by process 0; the others wait for it)."""
    from albert_jax.tokenizer import AlbertTokenizer, check_vocab_size, train_spm
    path = config.data.vocab_file
    if path is None:
        path = os.path.join(workdir, "spiece.model")
        if jax.process_index() == 0 and not os.path.exists(path):
            logging.info("training a %d-piece SentencePiece vocabulary into %s", vocab_size, path)
            sentences = [s for doc in documents for s in doc]
            train_spm(iter(sentences), vocab_size, path[:-len(".model")],
                      input_sentence_size=config.data.spm_sentences, seed=config.seed)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("spiece.model")
    tokenizer = AlbertTokenizer(path)
    check_vocab_size(tokenizer, vocab_size)
    return tokenizer


def prepare_examples(config: ml_collections.ConfigDict, documents, tokenizer, workdir: str, name: str,
                     seed: int) -> dict[str, np.ndarray]:
    """Pretraining examples as [N, ...] arrays, cached in the work dir under a hash of what made them."""
    from albert_jax.data.pretraining import create_examples, examples_to_arrays
    data = config.data
    settings = dict(max_seq_length=data.max_seq_length, max_predictions_per_seq=data.max_predictions_per_seq,
                    masked_lm_prob=data.masked_lm_prob, short_seq_prob=data.short_seq_prob, ngram=data.ngram,
                    dupe_factor=data.dupe_factor, seed=seed)
    digest = hashlib.sha256(json.dumps([settings, len(documents), documents[:3], documents[-3:],
                                        tokenizer.vocab_size], sort_keys=True).encode()).hexdigest()[:16]
    cache = os.path.join(workdir, f"examples_{name}_{digest}.npz")
    if os.path.exists(cache):
        with np.load(cache) as f:
            return dict(f)
    arrays = examples_to_arrays(list(create_examples(documents, tokenizer, **settings)))
    if jax.process_index() == 0:
        np.savez(cache + ".tmp.npz", **arrays)
        os.replace(cache + ".tmp.npz", cache)
    logging.info("%s: %d examples", name, len(arrays["input_ids"]))
    return arrays


def split_documents(documents, eval_fraction: float, seed: int):
    """(train, eval) documents: a seeded random `eval_fraction` of them is held out (at least one)."""
    if len(documents) < 2:
        raise ValueError(f"the corpus has {len(documents)} document(s); at least 2 are needed (train + eval)")
    order = np.random.default_rng([seed, 7]).permutation(len(documents))
    n_eval = min(max(1, int(round(len(documents) * eval_fraction))), len(documents) - 1)
    held = set(order[:n_eval].tolist())
    return ([d for i, d in enumerate(documents) if i not in held], [d for i, d in enumerate(documents) if i in held])


# ---------------------------------------------------------------------------------------------------------
# Loss and metrics
# ---------------------------------------------------------------------------------------------------------
def pretraining_loss(model: modeling.AlbertForPreTraining, params, batch, dropout_rng, deterministic: bool):
    """The original ALBERT losses: MLM = weighted mean NLL over real predictions, SOP = mean NLL, total = sum.

    Returns (loss, sums) where sums are additive statistics for `summarize_pretraining`.
    """
    out = model.apply({"params": params}, batch["input_ids"], batch["input_mask"], batch["segment_ids"],
                      deterministic=deterministic, rngs={"dropout": dropout_rng},
                      masked_lm_positions=batch["masked_lm_positions"])
    mlm_logp = jax.nn.log_softmax(out.prediction_logits.astype(jnp.float32))
    mlm_nll = -jnp.take_along_axis(mlm_logp, batch["masked_lm_ids"][..., None], -1)[..., 0]
    weights = batch["masked_lm_weights"].astype(jnp.float32)
    mlm_loss = jnp.sum(mlm_nll * weights) / (jnp.sum(weights) + 1e-5)
    sop_logp = jax.nn.log_softmax(out.sop_logits.astype(jnp.float32))
    labels = batch["sentence_order_label"]
    sop_nll = -jnp.take_along_axis(sop_logp, labels[:, None], -1)[:, 0]
    loss = mlm_loss + sop_nll.mean()
    sums = dict(
        mlm_loss=jnp.sum(mlm_nll * weights), mlm_correct=jnp.sum((mlm_logp.argmax(-1) == batch["masked_lm_ids"])
                                                                  * weights),
        mlm_count=jnp.sum(weights), sop_loss=jnp.sum(sop_nll), sop_correct=jnp.sum(sop_logp.argmax(-1) == labels),
        sop_count=jnp.asarray(labels.shape[0], jnp.float32))
    return loss, sums


def summarize_pretraining(sums: dict) -> dict:
    """Additive sums -> loss, mlm_loss, sop_loss, mlm_accuracy, sop_accuracy."""
    mlm_loss = sums["mlm_loss"] / max(sums["mlm_count"], 1e-5)
    sop_loss = sums["sop_loss"] / max(sums["sop_count"], 1)
    return dict(loss=float(mlm_loss + sop_loss), mlm_loss=float(mlm_loss), sop_loss=float(sop_loss),
                mlm_accuracy=float(sums["mlm_correct"] / max(sums["mlm_count"], 1e-5)),
                sop_accuracy=float(sums["sop_correct"] / max(sums["sop_count"], 1)))


# ---------------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------------
def build_task(config: ml_collections.ConfigDict, workdir: str) -> tuple[loop.Task, AlbertConfig, Any]:
    """(task, model config, tokenizer) for `config`; validates everything before any compute."""
    from albert_jax.data.sources import load_source
    albert_config = build_model_config(config.model)
    validate(config, albert_config)
    documents = load_source(config.data.source, data_dir=config.data.tfds_data_dir,
                            max_documents=config.data.max_documents)
    os.makedirs(workdir, exist_ok=True)
    train_docs, eval_docs = split_documents(documents, config.data.eval_fraction, config.seed)
    tokenizer = prepare_tokenizer(config, train_docs, workdir, albert_config.vocab_size)
    micro = config.batch_size // config.optimizer.grad_accum_steps
    train_arrays = prepare_examples(config, train_docs, tokenizer, workdir, "train", config.seed)
    eval_arrays = prepare_examples(config, eval_docs, tokenizer, workdir, "eval", config.seed + 1)
    if len(eval_arrays["input_ids"]) < micro:  # a tiny held-out set: repeat it to fill one batch
        reps = -(-micro // len(eval_arrays["input_ids"]))
        eval_arrays = {k: np.concatenate([v] * reps) for k, v in eval_arrays.items()}
    eval_source = ArrayBatches(eval_arrays, micro, config.seed)
    n_eval = min(config.data.eval_batches, max(1, eval_source.size // eval_source.batch_size))
    model = modeling.AlbertForPreTraining(albert_config)
    seq = config.data.max_seq_length
    task = loop.Task(
        model=model,
        loss_fn=lambda params, batch, rng, det: pretraining_loss(model, params, batch, rng, det),
        summarize=summarize_pretraining,
        init_params=lambda rng: model.init(rng, jnp.zeros((1, seq), jnp.int32))["params"],
        train_batches=ArrayBatches(train_arrays, micro, config.seed),
        eval_batches=[eval_source.batch(i) for i in range(n_eval)])
    return task, albert_config, tokenizer


def run(config: ml_collections.ConfigDict, workdir: str, *, overwrite: bool = False, resume: bool = True):
    """Pretrains as configured; then exports to HF and prints fill-mask predictions if configured.
    Returns (AlbertConfig, final params)."""
    task, albert_config, tokenizer = build_task(config, workdir)
    state = loop.train(config, workdir, task, fingerprint=fingerprint(config), overwrite=overwrite, resume=resume)
    params = jax.device_get(state.params)
    if jax.process_index() == 0:
        pretrained.save_pretrained(albert_config, params, os.path.join(workdir, "final"))
        tokenizer.save_pretrained(os.path.join(workdir, "final"))
        if config.export.hf_dir:
            export_hf(albert_config, params, tokenizer, os.path.join(workdir, config.export.hf_dir))
        if config.export.fill_mask:
            show_fill_mask(albert_config, params, tokenizer, list(config.export.fill_mask))
    return albert_config, params


def export_hf(albert_config: AlbertConfig, params, tokenizer, out_dir: str) -> None:
    """config.json + model.safetensors + tokenizer files, loadable by transformers as is. When
    transformers is installed, loads the export with it and reports the largest logit difference."""
    from albert_jax import convert
    convert.save_hf(albert_config, params, out_dir)
    tokenizer.save_pretrained(out_dir)
    print(f"exported a transformers model directory to {out_dir}")
    try:
        import torch
        import transformers
    except ImportError:
        return
    hf_model = transformers.AlbertForPreTraining.from_pretrained(out_dir).eval()
    ids = np.asarray([tokenizer.encode("The function returns a list of the arguments.")])
    with torch.no_grad():
        theirs = hf_model(input_ids=torch.tensor(ids)).prediction_logits.numpy()
    ours = modeling.AlbertForPreTraining(albert_config).apply({"params": params}, ids).prediction_logits
    print(f"transformers.AlbertForPreTraining loads {out_dir}: max |logit difference| "
          f"{float(np.abs(np.asarray(ours) - theirs).max()):.2e}")


def show_fill_mask(albert_config: AlbertConfig, params, tokenizer, sentences: list[str]) -> None:
    """Prints the fill-mask pipeline's predictions (the model card's format) for each sentence."""
    from albert_jax.pipelines import pipeline
    unmasker = pipeline("fill-mask", model=(albert_config, params), tokenizer=tokenizer)
    for sentence in sentences:
        print(f"\nfill-mask: {sentence}")
        for prediction in unmasker(sentence):
            print(f"  {prediction}")
