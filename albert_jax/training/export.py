"""What a job leaves behind besides checkpoints: `final/` (albert-jax format + tokenizer), a transformers
directory checked against transformers when it is installed, fill-mask examples, and `best/` (`final/`'s
files of the best evaluation so far, with `config.best_metric`). Only a run that did all its steps writes
`final/` and exports (`loop.train` raises for a stopped one), and each model directory ends with
`run_state.json` ({"step": S, "total_steps": N, "complete": S == N}), written last."""

from __future__ import annotations

import json
import os
import shutil
from typing import cast

import numpy as np

from albert_jax import experiment, modeling, pretrained
from albert_jax.config import AlbertConfig

RUN_STATE_NAME = "run_state.json"  # in final/, best/ and exports: the step of the parameters, written last
BEST_DIR, BEST_NAME = "best", "best.json"  # <workdir>/best/best.json: which evaluation best/ holds


def save_final(albert_config: AlbertConfig, params, tokenizer, workdir: str, total_steps: int) -> str:
    """Writes `workdir/final` (config.json, albert_jax.safetensors, tokenizer files, run_state.json) of a run
    that did all its `total_steps`; returns its path."""
    out_dir = os.path.join(workdir, "final")
    _write_model_dir(pretrained.save_pretrained, albert_config, params, tokenizer, out_dir, total_steps, total_steps)
    return out_dir


def save_best(albert_config: AlbertConfig, params, tokenizer, workdir: str, total_steps: int, best: dict) -> str:
    """Writes `workdir/best`: `save_final`'s files for `params`, the parameters of the evaluation `best`
    (`loop.Best.record`: step, metric, value, metrics), and best.json = `best`; returns its path. Built in
    best.partial/ and renamed into place: a kill leaves the previous best/ whole (or, between the two renames,
    none beside a whole best.old/), never a directory that looks complete but is not."""
    out_dir = os.path.join(workdir, BEST_DIR)
    partial, old = out_dir + ".partial", out_dir + ".old"
    for leftover in (partial, old):  # of a write that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    _write_model_dir(pretrained.save_pretrained, albert_config, params, tokenizer, partial, best["step"], total_steps)
    experiment.write_json(os.path.join(partial, BEST_NAME), best)
    if os.path.exists(out_dir):
        os.rename(out_dir, old)
    os.rename(partial, out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return out_dir


def read_run_state(directory: str) -> dict | None:
    """The run_state.json of a model directory written by `save_final` / `export_hf`, None without one."""
    return _read_json(os.path.join(directory, RUN_STATE_NAME))


def read_best(workdir: str) -> dict | None:
    """The best.json of the run in `workdir` (`save_best`), None without one."""
    return _read_json(os.path.join(workdir, BEST_DIR, BEST_NAME))


def _read_json(path: str) -> dict | None:
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _write_model_dir(
    save, albert_config: AlbertConfig, params, tokenizer, out_dir: str, step: int, total_steps: int
) -> None:
    """`save(albert_config, params, out_dir)` and the tokenizer, between removing an earlier run_state.json (a
    half-rewritten directory is not complete) and writing this one (the parameters of `step`), last."""
    marker = os.path.join(out_dir, RUN_STATE_NAME)
    if os.path.exists(marker):
        os.remove(marker)
    save(albert_config, params, out_dir)
    tokenizer.save_pretrained(out_dir)
    experiment.write_json(marker, {"step": step, "total_steps": total_steps, "complete": step == total_steps})


def export_hf(albert_config: AlbertConfig, params, tokenizer, out_dir: str, total_steps: int) -> None:
    """config.json + model.safetensors + tokenizer files (+ run_state.json), loadable by transformers as is,
    of a run that did all its `total_steps`. When transformers is installed, loads the export with it and
    reports the largest logit difference."""
    from albert_jax import convert

    _write_model_dir(convert.save_hf, albert_config, params, tokenizer, out_dir, total_steps, total_steps)
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
    ours = cast(
        modeling.AlbertForPreTrainingOutput, modeling.AlbertForPreTraining(albert_config).apply({"params": params}, ids)
    ).prediction_logits
    print(
        f"transformers.AlbertForPreTraining loads {out_dir}: max |logit difference| "
        f"{float(np.abs(np.asarray(ours) - theirs).max()):.2e}"
    )


def show_fill_mask(albert_config: AlbertConfig, params, tokenizer, sentences: list[str]) -> None:
    """Prints the fill-mask pipeline's predictions (the model card's format) for each sentence."""
    from albert_jax.pipelines import pipeline

    unmasker = pipeline("fill-mask", model=(albert_config, params), tokenizer=tokenizer)
    for sentence in sentences:
        print(f"\nfill-mask: {sentence}")
        for prediction in cast(list, unmasker(sentence)):  # one text's predictions (the pipeline is untyped)
            print(f"  {prediction}")
