"""Item g of the benchmark, pipeline throughput with tokenization: albert-jax's `pipeline` against transformers'
on the same exported model and tokenizer, fill-mask and feature-extraction (tensors returned in both) over the
same sentences of the built-in corpus, each system at its fastest batch size (`throughput`).
"""

from __future__ import annotations

import os
import statistics
import time

import jax
import torch
import transformers

import albert_jax as aj
from albert_jax import convert
from albert_jax.data.corpus import builtin_corpus
from albert_jax.tokenizer import AlbertTokenizer, train_spm

from .torch_steps import torch_device
from .workloads import Settings

SELECT_SENTENCES = 128
TASKS = {"pipeline_fill_mask": "fill-mask", "pipeline_feature_extraction": "feature-extraction"}


def sentences(n: int) -> tuple[list[str], list[str]]:
    """(plain, masked): `n` corpus sentences of 6-40 words, and the same with the middle word replaced by [MASK]."""
    pool = [s for doc in builtin_corpus() for s in doc if 6 <= len(s.split()) <= 40]
    if len(pool) < n:
        raise ValueError(f"the built-in corpus has {len(pool)} sentences of 6-40 words, fewer than {n}")
    plain = [pool[i * len(pool) // n] for i in range(n)]
    masked = []
    for sentence in plain:
        words = sentence.split()
        words[len(words) // 2] = "[MASK]"
        masked.append(" ".join(words))
    return plain, masked


def export_model(s: Settings, out_dir: str) -> str:
    """An HF directory (AlbertForPreTraining weights, config, spiece.model) for the pipelines; returns it. Its
    vocabulary is trained here on the built-in corpus, `s.pipeline_vocab` pieces (the corpus cannot support 30k)."""
    plain = [x for doc in builtin_corpus() for x in doc]
    tokenizer = AlbertTokenizer(train_spm(iter(plain), s.pipeline_vocab, os.path.join(out_dir, "spm")))
    config = s.albert_config().replace(vocab_size=tokenizer.vocab_size)
    params = aj.init_params(aj.AlbertForPreTraining(config), jax.random.PRNGKey(0))
    hf_dir = os.path.join(out_dir, "hf")
    convert.save_hf(config, params, hf_dir)
    tokenizer.save_pretrained(hf_dir)
    return hf_dir


def _call_kwargs(task: str) -> dict:
    return {"return_tensors": True} if task == "feature-extraction" else {}


def _ours(task: str, hf_dir: str, s: Settings):
    config, params = aj.from_pretrained(hf_dir)
    tokenizer = AlbertTokenizer.from_pretrained(hf_dir)
    model = (config.replace(dtype=s.dtype), params)

    def make(bs):
        pipe = aj.pipeline(task, model, tokenizer, batch_size=bs)
        return lambda texts: pipe(texts, **_call_kwargs(task))

    return make


def _theirs(task: str, hf_dir: str, s: Settings):
    device, dtype = torch_device(s.device), getattr(torch, s.dtype)

    def make(bs):
        pipe = transformers.pipeline(task, model=hf_dir, batch_size=bs, device=device, dtype=dtype)
        return lambda texts: pipe(texts, **_call_kwargs(task))

    return make


def _seconds(fn, texts) -> float:
    start = time.perf_counter()
    fn(texts)
    return time.perf_counter() - start


def throughput(makers: dict, texts: list[str], batch_sizes, passes: int) -> dict:
    """{system: record}: each system's fastest batch size on the first SELECT_SENTENCES texts, then an untimed
    pass and `passes` timed passes over `texts`; the systems take turns at every stage. `makers`: {system:
    batch_size -> (texts -> results)}. A system that fails gets an error record, the others go on."""
    subset, errors = texts[:SELECT_SENTENCES], {}
    per_size, pipes = {name: {} for name in makers}, {name: {} for name in makers}

    def attempt(name, fn):
        if name not in errors:
            try:
                fn()
            except Exception as e:  # recorded in the table, not skipped
                errors[name] = dict(status="error", reason=f"{type(e).__name__}: {e}"[:500])

    for bs in batch_sizes:
        for name, make in makers.items():

            def select(name=name, make=make, bs=bs):
                pipes[name][bs] = make(bs)
                pipes[name][bs](subset)  # warm-up: compiles / allocates what this batch size needs
                per_size[name][bs] = len(subset) / _seconds(pipes[name][bs], subset)

            attempt(name, select)
    best = {name: max(sizes, key=sizes.get) for name, sizes in per_size.items() if name not in errors}
    for name in best:
        attempt(name, lambda name=name: pipes[name][best[name]](texts))
    times = {name: [] for name in best}
    for _ in range(passes):
        for name in best:
            attempt(name, lambda name=name: times[name].append(_seconds(pipes[name][best[name]], texts)))
    out = dict(errors)
    for name in best:
        if name in errors:
            continue
        seconds = statistics.median(times[name])
        out[name] = dict(
            status="ok",
            seconds=seconds,
            times=times[name],
            batch_size=best[name],
            sentences=len(texts),
            sentences_per_s=len(texts) / seconds,
            selection_sentences_per_s={str(k): v for k, v in per_size[name].items()},
        )
    return out


def run(s: Settings, work_dir: str) -> dict:
    """{'pipeline_fill_mask': {...}, 'pipeline_feature_extraction': {...}}, each {'systems': {name: record},
    'tokens': real tokens of the texts (special tokens included), 'task', 'vocab_size', 'passes'}."""
    hf_dir = export_model(s, work_dir)
    plain, masked = sentences(s.pipeline_sentences)
    tokenizer = AlbertTokenizer.from_pretrained(hf_dir)
    out = {}
    for item, task in TASKS.items():
        texts = masked if task == "fill-mask" else plain
        tokens = int(sum(len(tokenizer.encode(t)) for t in texts))
        makers = {"albert_jax": _ours(task, hf_dir, s), "transformers": _theirs(task, hf_dir, s)}
        records = throughput(makers, texts, s.pipeline_batch_sizes, s.pipeline_passes)
        for record in records.values():
            if record["status"] == "ok":
                record["tokens_per_s"] = tokens / record["seconds"]
        records["keras_hub"] = dict(status="n/a", reason="Keras-Hub pipelines are not part of this comparison")
        out[item] = dict(
            systems=records, tokens=tokens, vocab_size=tokenizer.vocab_size, task=task, passes=s.pipeline_passes
        )
    return out
