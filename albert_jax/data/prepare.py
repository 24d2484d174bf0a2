"""Pretraining data in the work dir: the vocabulary (trained once unless given), the train/eval document
split, and the examples (cached under a hash of what made them)."""

from __future__ import annotations

import hashlib
import json
import os

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils


def split_documents(documents, eval_fraction: float, seed: int):
    """(train, eval) documents: a seeded random `eval_fraction` of them is held out (at least one)."""
    if len(documents) < 2:
        raise ValueError(f"the corpus has {len(documents)} document(s); at least 2 are needed (train + eval)")
    order = np.random.default_rng([seed, 7]).permutation(len(documents))
    n_eval = min(max(1, int(round(len(documents) * eval_fraction))), len(documents) - 1)
    held = set(order[:n_eval].tolist())
    return ([d for i, d in enumerate(documents) if i not in held], [d for i, d in enumerate(documents) if i in held])


def prepare_tokenizer(data: ml_collections.ConfigDict, documents, workdir: str, vocab_size: int, seed: int):
    """The run's tokenizer: `data.vocab_file`, or a SentencePiece model trained once into the work dir
    (by process 0; the others wait for it)."""
    from albert_jax.tokenizer import AlbertTokenizer, check_vocab_size, train_spm
    path = data.vocab_file
    if path is None:
        path = os.path.join(workdir, "spiece.model")
        if jax.process_index() == 0 and not os.path.exists(path):
            logging.info("training a %d-piece SentencePiece vocabulary into %s", vocab_size, path)
            sentences = [s for doc in documents for s in doc]
            train_spm(iter(sentences), vocab_size, path[:-len(".model")],
                      input_sentence_size=data.spm_sentences, seed=seed)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("spiece.model")
    tokenizer = AlbertTokenizer(path)
    check_vocab_size(tokenizer, vocab_size)
    return tokenizer


def prepare_examples(data: ml_collections.ConfigDict, documents, tokenizer, workdir: str, name: str,
                     seed: int) -> dict[str, np.ndarray]:
    """Pretraining examples as [N, ...] arrays, cached in the work dir under a hash of what made them."""
    from albert_jax.data.pretraining import create_examples, examples_to_arrays
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
