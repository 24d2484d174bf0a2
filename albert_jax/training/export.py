"""What a finished job leaves behind besides checkpoints: `final/` (albert-jax format + tokenizer), a
transformers directory checked against transformers when it is installed, fill-mask examples."""

from __future__ import annotations

import os
from typing import cast

import numpy as np

from albert_jax import modeling, pretrained
from albert_jax.config import AlbertConfig


def save_final(albert_config: AlbertConfig, params, tokenizer, workdir: str) -> str:
    """Writes `workdir/final` (config.json, albert_jax.safetensors, tokenizer files); returns its path."""
    out_dir = os.path.join(workdir, "final")
    pretrained.save_pretrained(albert_config, params, out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


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
