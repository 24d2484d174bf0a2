"""Fine-tuning and evaluation on GLUE, SQuAD v1.1/v2.0 and RACE: the config, the tasks for the train loop,
and `run`, mirroring `pretrain.py`.

`run(config, workdir)`: claim the work dir -> model config and tokenizer from `init_from` (or the config's
preset and `data.vocab_file`) -> features -> `loop.train` (resume -> `init_from` with a fresh head ->
scratch; evaluation with the official metrics, the best so far by `best_metric` saved to `best/`) -> task
outputs (GLUE test-set submission files, SQuAD prediction files) and `final/`. `total_steps=0` with
`init_from` evaluates a checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
from ml_collections.config_dict import placeholder

from albert_jax import experiment, flops, modeling
from albert_jax.config import AlbertConfig
from albert_jax.data.batches import ArrayBatches
from albert_jax.tokenizer import VOCAB_FILE, AlbertTokenizer, check_vocab_size
from albert_jax.training import export, initialization, loop, steps

FINGERPRINT = ("seed", "batch_size", "task", "model", "data", "optimizer", "total_steps", "init_from", "init_from_skip")
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def default_config() -> ml_collections.ConfigDict:
    """Every field a fine-tuning config has (the loop's own fields are in `loop.base_config`)."""
    c = loop.base_config()
    c.job = "finetune"
    c.task = "glue"  # 'glue', 'squad' or 'race'
    c.init_from = "albert/albert-base-v2"
    c.log_every = 50
    c.eval_every = 0
    c.checkpoint_every = 1000
    # Used as is without init_from; with init_from, the fields set here override the checkpoint's config.
    c.model = experiment.model_section("albert-base-v2")
    # the loop's optimizer section, with BERT's fine-tuning optimizer (the other fields as for pretraining)
    c.optimizer.optimizer, c.optimizer.learning_rate, c.optimizer.warmup_steps = "adamw", 3e-5, 1000
    c.data = ml_collections.ConfigDict(
        dict(
            source="files",  # 'files' (the original formats, paths below) or 'tfds'
            tfds_data_dir=placeholder(str),
            vocab_file=placeholder(str),  # spiece.model; None: the one next to init_from's weights
            glue_task="mnli",  # cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli
            glue_dir=placeholder(str),  # <glue_dir>/<TASK>/{train,dev,test}.tsv as the official download
            squad_version="2.0",  # '1.1' or '2.0'
            squad_train_file=placeholder(str),
            squad_dev_file=placeholder(str),
            race_dir=placeholder(str),  # <race_dir>/{train,dev,test}/{middle,high}/*.txt
            max_seq_length=512,
            doc_stride=128,  # SQuAD: step between window starts, in tokens
            max_query_length=64,  # SQuAD
            n_best_size=20,  # SQuAD
            max_answer_length=30,  # SQuAD
            max_qa_length=128,  # RACE: question + option tokens
            max_train_examples=placeholder(int),  # keep only the first N (quick experiments)
            max_eval_examples=placeholder(int),
        )
    )
    return c


@dataclasses.dataclass
class TaskHead:
    """What a downstream task's model is, known without reading its data: the head, its training rows and
    loss, what prediction returns, and the model FLOPs' head kind (flops.model_flops)."""

    head: type
    num_labels: int
    labels: dict  # label key -> (shape per row, dtype) in a training batch, beside MODEL_INPUTS
    loss: Callable  # (model output, batch) -> (per-example loss [B], per-example correct [B])
    outputs: Callable  # model output -> dict of per-row arrays (what predict returns)
    flops_head: str
    choices: int = 1  # rows of model inputs per example (RACE: the options)


@dataclasses.dataclass
class DownstreamTask:
    """What a downstream task's data gives the loop: train features, an evaluator and the end-of-run outputs
    (test-set predictions)."""

    train: dict | None
    evaluate: Callable  # predict -> metrics
    finish: Callable | None = None  # predict -> None, after training (test-set outputs)


def data_path(data: ml_collections.ConfigDict, field: str) -> str | None:
    """`data.<field>` when reading the original files (`data.source='files'`), None when reading tfds."""
    if data.source not in ("files", "tfds"):
        raise ValueError(f"config.data.source must be 'files' or 'tfds', got {data.source!r}")
    if data.source == "tfds":
        return None
    if not data[field]:
        raise ValueError(f"config.data.{field} is needed to read the original files (or set config.data.source=tfds)")
    return data[field]


def _limit(arrays_or_list, n):
    return arrays_or_list if n is None else arrays_or_list[:n]


def _cross_entropy(logits, labels):
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    return -jnp.take_along_axis(logp, labels[:, None], -1)[:, 0], (logp.argmax(-1) == labels).astype(jnp.float32)


# ---------------------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------------------
def glue_head(config: ml_collections.ConfigDict) -> TaskHead:
    """GLUE: sequence classification over the task's labels; STS-B: regression (one output, squared error)."""
    from albert_jax.data import glue

    info = glue.get_task(config.data.glue_task)

    def loss(out, batch):
        if info.labels is None:
            prediction = out.logits[:, 0].astype(jnp.float32)
            return (prediction - batch["label"]) ** 2, jnp.zeros_like(prediction)
        return _cross_entropy(out.logits, batch["label"])

    label = ((), "float32" if info.labels is None else "int32")
    return TaskHead(
        modeling.AlbertForSequenceClassification,
        info.num_labels,
        {"label": label},
        loss,
        lambda out: {"logits": out.logits},
        "classification",
    )


def glue_data(config: ml_collections.ConfigDict, tokenizer, workdir: str) -> DownstreamTask:
    """GLUE: sequence classification (STS-B: regression), metrics of the official GLUE definitions,
    test-set predictions in the leaderboard format in `workdir/glue_submission/`."""
    from albert_jax.data import glue
    from albert_jax.evaluation.glue import glue_metrics, write_submission

    data = config.data
    info = glue.get_task(data.glue_task)
    glue_dir = data_path(data, "glue_dir")

    def load(split, limit):
        examples = _limit(glue.load_glue(info.name, split, glue_dir=glue_dir, tfds_data_dir=data.tfds_data_dir), limit)
        return examples, glue.featurize(examples, tokenizer, info.name, data.max_seq_length)

    train = load("train", data.max_train_examples)[1] if config.total_steps else None
    evals = {split: load(split, data.max_eval_examples)[1] for split in info.eval_splits}

    def predictions(predict, arrays):
        logits = predict({k: arrays[k] for k in MODEL_INPUTS})["logits"]
        return logits[:, 0] if info.labels is None else logits.argmax(-1)

    def evaluate(predict):
        metrics = {}
        for n, (split, arrays) in enumerate(evals.items()):
            suffix = "" if n == 0 else "_" + split.replace("dev_", "")
            found = glue_metrics(info.name, predictions(predict, arrays), arrays["label"])
            metrics.update({k + suffix: v for k, v in dict(found, num_examples=len(arrays["label"])).items()})
        return metrics

    def finish(predict):
        for split in info.test_splits:
            try:
                examples, arrays = load(split, None)
            except FileNotFoundError as e:
                print(f"no GLUE test predictions for {split}: {e}")
                continue
            if jax.process_index() == 0:
                path = write_submission(
                    info.name,
                    split,
                    [e.guid for e in examples],
                    predictions(predict, arrays),
                    os.path.join(workdir, "glue_submission"),
                )
                print(f"wrote test-set predictions to {path}")

    return DownstreamTask(train, evaluate, finish)


def squad_head(config: ml_collections.ConfigDict) -> TaskHead:
    """SQuAD: start and end logits over the window's tokens; the loss is the mean of their cross-entropies."""

    def loss(out, batch):
        start, start_ok = _cross_entropy(out.start_logits, batch["start_positions"])
        end, end_ok = _cross_entropy(out.end_logits, batch["end_positions"])
        return (start + end) / 2, start_ok * end_ok

    return TaskHead(
        modeling.AlbertForQuestionAnswering,
        2,
        {"start_positions": ((), "int32"), "end_positions": ((), "int32")},
        loss,
        lambda out: {"start_logits": out.start_logits, "end_logits": out.end_logits},
        "qa",
    )


def squad_data(config: ml_collections.ConfigDict, tokenizer, workdir: str) -> DownstreamTask:
    """SQuAD v1.1/v2.0: span prediction over doc_stride windows; the official v2.0 evaluation (best null
    threshold searched on dev); predictions.json, nbest_predictions.json (and null_odds.json) in `workdir`."""
    from albert_jax.data import squad
    from albert_jax.evaluation.squad import score

    data = config.data
    version = str(data.squad_version)
    v2 = version == "2.0"
    files = dict(
        train_file=data_path(data, "squad_train_file") if config.total_steps else None,
        dev_file=data_path(data, "squad_dev_file"),
    )
    settings = dict(
        max_seq_length=data.max_seq_length, doc_stride=data.doc_stride, max_query_length=data.max_query_length
    )
    train = None
    if config.total_steps:
        examples, _ = squad.load_squad(version, "train", tfds_data_dir=data.tfds_data_dir, **files)
        source = files["train_file"] or f"tfds squad v{version} train"
        train, _ = squad.featurize(
            _limit(examples, data.max_train_examples), tokenizer, is_training=True, source=source, **settings
        )
    dev_examples, dataset = squad.load_squad(version, "dev", tfds_data_dir=data.tfds_data_dir, **files)
    dev_examples = _limit(dev_examples, data.max_eval_examples)
    dev, features = squad.featurize(dev_examples, tokenizer, is_training=False, **settings)

    def evaluate(predict):
        logits = predict({k: dev[k] for k in MODEL_INPUTS})
        metrics = score(
            dataset,
            dev_examples,
            features,
            logits["start_logits"],
            logits["end_logits"],
            out_dir=workdir if jax.process_index() == 0 else None,
            n_best_size=data.n_best_size,
            max_answer_length=data.max_answer_length,
            version_2_with_negative=v2,
        )
        return dict(metrics, num_examples=len(dev_examples))

    return DownstreamTask(train, evaluate)


def race_head(config: ml_collections.ConfigDict) -> TaskHead:
    """RACE: one score per option (rows [options, T]), a cross-entropy over the options."""
    from albert_jax.data import race

    return TaskHead(
        modeling.AlbertForMultipleChoice,
        1,
        {"label": ((), "int32")},
        lambda out, batch: _cross_entropy(out.logits, batch["label"]),
        lambda out: {"logits": out.logits},
        "multiple_choice",
        choices=race.NUM_OPTIONS,
    )


def race_data(config: ml_collections.ConfigDict, tokenizer, workdir: str) -> DownstreamTask:
    """RACE: 4-way multiple choice; accuracy on middle, high and all."""
    from albert_jax.data import race
    from albert_jax.evaluation.race import race_metrics

    data = config.data
    race_dir = data_path(data, "race_dir")

    def load(split, limit):
        examples = _limit(race.load_race(split, race_dir=race_dir, tfds_data_dir=data.tfds_data_dir), limit)
        return race.featurize(examples, tokenizer, data.max_seq_length, data.max_qa_length)

    train = load("train", data.max_train_examples) if config.total_steps else None
    dev = load("dev", data.max_eval_examples)

    def evaluate(predict):
        logits = predict({k: dev[k] for k in MODEL_INPUTS})["logits"]
        return dict(race_metrics(logits.argmax(-1), dev["label"], dev["level"]), num_examples=len(dev["label"]))

    return DownstreamTask(train, evaluate)


TASKS = {"glue": (glue_head, glue_data), "squad": (squad_head, squad_data), "race": (race_head, race_data)}


# ---------------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------------
def model_config(config: ml_collections.ConfigDict, init_from: initialization.Pretrained | None) -> AlbertConfig:
    """`init_from`'s model config with the config's `model` fields on top; the preset without init_from."""
    overrides = experiment.model_overrides(config.model)
    if init_from is not None:
        albert_config = init_from.config.replace(**overrides)
    else:
        albert_config = AlbertConfig.from_preset(config.model.preset, **overrides)
    experiment.check_max_seq_length(config, albert_config)
    return albert_config


def model_and_tokenizer(
    config: ml_collections.ConfigDict, init_from: initialization.Pretrained | None
) -> tuple[AlbertConfig, AlbertTokenizer]:
    """The model config to fine-tune (`model_config`) and the tokenizer (`data.vocab_file`, else init_from's),
    checked against each other."""
    albert_config = model_config(config, init_from)
    if config.data.vocab_file:
        tokenizer = AlbertTokenizer(config.data.vocab_file)
    elif init_from is not None and init_from.tokenizer is not None:
        tokenizer = init_from.tokenizer
    elif init_from is not None:
        raise ValueError(
            f"config.init_from={config.init_from!r} has no tokenizer ({VOCAB_FILE} in "
            f"{init_from.directory}); set config.data.vocab_file"
        )
    else:
        raise ValueError("config.data.vocab_file is needed to fine-tune from scratch (no config.init_from)")
    check_vocab_size(tokenizer, albert_config.vocab_size)
    return albert_config, tokenizer


def task_head(config: ml_collections.ConfigDict) -> TaskHead:
    """The head of `config.task`; ValueError for an unknown task."""
    if config.task not in TASKS:
        raise ValueError(f"config.task must be one of {sorted(TASKS)}, got {config.task!r}")
    return TASKS[config.task][0](config)


def model_task(config: ml_collections.ConfigDict, albert_config: AlbertConfig, head: TaskHead) -> steps.Task:
    """The task without its data (no batches, no evaluation) for `albert_config` (num_labels set by `head`):
    what planning compiles, and `build_task` completes."""
    model = head.head(albert_config.replace(num_labels=head.num_labels))
    seq = config.data.max_seq_length
    rows = (seq,) if head.choices == 1 else (head.choices, seq)

    def loss_fn(params, batch, rng, deterministic):
        out = model.apply(
            {"params": params}, *(batch[k] for k in MODEL_INPUTS), deterministic=deterministic, rngs={"dropout": rng}
        )
        losses, correct = head.loss(out, batch)
        return losses.mean(), dict(
            loss=losses.sum(), correct=correct.sum(), count=jnp.asarray(losses.shape[0], jnp.float32)
        )

    return steps.Task(
        loss_fn=loss_fn,
        summarize=lambda s: dict(loss=float(s["loss"] / s["count"]), accuracy=float(s["correct"] / s["count"])),
        init_params=lambda rng: modeling.boxed_params(model, rng, seq),
        train_batches=None,
        predict_fn=lambda params, batch: head.outputs(
            model.apply({"params": params}, *(batch[k] for k in MODEL_INPUTS))
        ),
        example_spec={**{k: (rows, "int32") for k in MODEL_INPUTS}, **head.labels},
        predict_keys=MODEL_INPUTS,
        flops_per_example=flops.model_flops(model.config, 1, seq, head.flops_head, training=True, choices=head.choices),
    )


def build_task(
    config: ml_collections.ConfigDict, workdir: str, init_from: initialization.Pretrained | None = None
) -> tuple[steps.Task, AlbertConfig, AlbertTokenizer]:
    """(task, model config, tokenizer) for `config` (and its resolved `init_from`): reads and featurizes the
    task's data."""
    head = task_head(config)
    albert_config, tokenizer = model_and_tokenizer(config, init_from)
    data = TASKS[config.task][1](config, tokenizer, workdir)
    task = model_task(config, albert_config, head)
    micro = config.batch_size // config.optimizer.grad_accum_steps
    if data.train is not None:  # the batches hold what the step reads (task.example_spec), nothing else
        train = {k: data.train[k] for k in task.example_spec or ()}
        task = dataclasses.replace(task, train_batches=ArrayBatches(train, micro, config.seed))
    task = dataclasses.replace(task, evaluate=data.evaluate, finish=data.finish)
    return task, albert_config.replace(num_labels=head.num_labels), tokenizer


def run(config: ml_collections.ConfigDict, workdir: str, *, overwrite: bool = False, resume: bool = True):
    """Fine-tunes (or, with total_steps=0, evaluates) as configured; writes the task's outputs and
    `final/`, and with `config.best_metric` keeps `best/` (`export.save_best`) at the best evaluation so far,
    printed at the end. Returns (AlbertConfig, final params as numpy). A run stopped by a signal raises
    (`loop.train`) and writes neither outputs nor `final/`."""
    init_from = initialization.resolve(config.init_from) if config.init_from else None
    with loop.claim_run(config, workdir, experiment.fingerprint(config, FINGERPRINT), overwrite) as mesh:
        task, albert_config, tokenizer = build_task(config, workdir, init_from)

        def save_best(params, best: dict) -> None:  # on every process: gathering the params is a collective
            params = loop.host_params(params)
            if jax.process_index() == 0:
                export.save_best(albert_config, params, tokenizer, workdir, config.total_steps, best)

        state = loop.train(config, workdir, task, mesh, resume=resume, init_from=init_from, on_best=save_best)
        params = loop.host_params(state.params)
        if jax.process_index() == 0:
            export.save_final(albert_config, params, tokenizer, workdir, config.total_steps)
            best = export.read_best(workdir) if config.best_metric else None
            if best is not None:
                where = os.path.join(workdir, export.BEST_DIR)
                print(f"best {best['metric']} {best['value']:.4g} at step {best['step']} -> {where}")
    return albert_config, params
