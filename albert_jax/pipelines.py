"""Inference pipelines with transformers' call and output formats: fill-mask, feature-extraction and
sentence-order (the SOP head).

    unmasker = albert_jax.pipeline("fill-mask", model="path/to/model_dir")
    unmasker("Hello I'm a [MASK] model.")   # [{'score', 'token', 'token_str', 'sequence'}, ...]

As in transformers, a `str` is one input and a `list` a batch (one result per input). A pair of texts is
a tuple `(a, b)` or a dict `{'text': a, 'text_pair': b}`. A batch is cut into chunks of `batch_size`
inputs of similar length (results come back in the input order), each padded to power-of-two shapes
(length at least 16), so the model is compiled once per shape bucket and later calls reuse it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from albert_jax import modeling
from albert_jax.config import AlbertConfig

MIN_LENGTH_BUCKET = 16
SOP_LABELS = ("in_order", "swapped")  # transformers: sentence_order_label 0 = A then B, 1 = swapped

logger = logging.getLogger(__name__)


class PipelineError(ValueError):
    """Bad pipeline input or a model that cannot serve the task (names the problem)."""


def _check_positive_int(name: str, value) -> None:
    """PipelineError unless `value` is an int >= 1 (a bool is not taken for one)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise PipelineError(f"{name} must be a positive int, got {value!r}")


def _bucket(n: int, minimum: int = 1) -> int:
    """The smallest power of two >= max(n, minimum)."""
    return max(minimum, 1 << max(n - 1, 0).bit_length())


class _Pipeline:
    """Tokenize -> pad to a shape bucket -> jitted model -> per-input results.

    Subclasses set `task`, `head` (the module whose parameter names are used) and `uses` (the parameter
    sub-trees the task reads), and implement `_forward` (run as a method of `head`) and `_postprocess`.
    The model is jitted once per pipeline; each new (batch bucket, length bucket) shape compiles once.
    """

    task: str
    head: type
    uses: tuple[str, ...]
    _forward: Callable[..., Any]  # a staticmethod (module, *arrays) -> outputs, run by `head.apply`
    _postprocess: Callable[..., list]  # (rows, **kwargs) -> one result per row

    def __init__(self, config: AlbertConfig, params: dict, tokenizer, batch_size: int = 16):
        _check_positive_int("batch_size", batch_size)
        self.config, self.tokenizer, self.batch_size = config, tokenizer, batch_size
        self.model = self.head(config)
        self.params = jax.device_put(self._select(params))
        self._apply = jax.jit(self._apply_model)

    def _select(self, params: dict) -> dict:
        """The parameters this task reads; PipelineError naming the missing or mis-shaped ones."""
        abstract = nn.meta.unbox(modeling.abstract_params(self.model))
        expected = cast(dict[str, jax.ShapeDtypeStruct], traverse_util.flatten_dict(abstract, sep="/"))
        given = cast(dict[str, Any], traverse_util.flatten_dict(params, sep="/"))
        wanted = [p for p in expected if p.startswith(self.uses)]
        missing = [p for p in wanted if p not in given]
        if missing:
            raise PipelineError(
                f"the model has no parameters for {self.task!r} (missing {', '.join(missing)}); "
                f"it needs a checkpoint with {', '.join(self.uses)}"
            )
        bad = [
            f"{p}: {np.shape(given[p])}, expected {expected[p].shape}"
            for p in wanted
            if np.shape(given[p]) != expected[p].shape
        ]
        if bad:
            raise PipelineError(f"parameters do not match the config: {'; '.join(bad)}")
        return traverse_util.unflatten_dict({p: given[p] for p in wanted}, sep="/")

    def _apply_model(self, params, *arrays):
        return self.model.apply({"params": params}, *arrays, method=type(self)._forward)

    # -- inputs ---------------------------------------------------------------------------------------
    @staticmethod
    def _as_pair(item) -> tuple[str, str | None]:
        if isinstance(item, str):
            return item, None
        if isinstance(item, dict) and "text" in item:
            return item["text"], item.get("text_pair")
        if isinstance(item, tuple) and len(item) == 2 and all(isinstance(x, str) for x in item):
            return item
        raise PipelineError(
            f"an input is a str, a (text, text_pair) tuple or a dict with 'text' and "
            f"'text_pair'; got {type(item).__name__} {item!r:.80}"
        )

    def _encode(self, items: list) -> list[dict[str, np.ndarray]]:
        """One row per input: input_ids and token_type_ids (int32 [T]) as the tokenizer makes them."""
        rows = []
        for item in items:
            text, pair = self._as_pair(item)
            row = {k: v[0] for k, v in self.tokenizer(text, pair).items() if k != "attention_mask"}
            if len(row["input_ids"]) > self.config.max_position_embeddings:
                raise PipelineError(
                    f"input of {len(row['input_ids'])} tokens is longer than the model's "
                    f"max_position_embeddings ({self.config.max_position_embeddings}): {text!r:.80}"
                )
            rows.append(row)
        return rows

    def _pad(self, rows: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ids, attention mask, token types, each int32 [batch bucket, length bucket]."""
        length = min(
            _bucket(max(len(r["input_ids"]) for r in rows), MIN_LENGTH_BUCKET), self.config.max_position_embeddings
        )
        shape = (_bucket(len(rows)), length)
        ids = np.full(shape, self.tokenizer.pad_token_id, np.int32)
        mask, types = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n], mask[i, :n], types[i, :n] = r["input_ids"], 1, r["token_type_ids"]
        return ids, mask, types

    def __call__(self, inputs, **kwargs):
        single = not isinstance(inputs, list)
        items = [inputs] if single else inputs
        if not items:
            raise PipelineError("no inputs given")
        rows = self._encode(items)
        # Batches of similar lengths pad little: the chunks are cut from the inputs sorted by length.
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
        results: list[Any] = [None] * len(rows)
        for start in range(0, len(rows), self.batch_size):
            chunk = order[start : start + self.batch_size]
            for i, result in zip(chunk, self._postprocess([rows[i] for i in chunk], **kwargs)):
                results[i] = result
        return results[0] if single else results


class FillMaskPipeline(_Pipeline):
    """`__call__(text or list of texts, top_k=5, targets=None)`; `top_k` a positive int.

    Per text: a list of `top_k` dicts {'score', 'token', 'token_str', 'sequence'}, best first; a text with
    several [MASK] gives one such list per mask (each filled alone, the others kept in 'sequence').
    `targets` (a str or list) restricts the candidates; a target that is not a piece is replaced by its
    first piece, as in transformers. Like transformers, a list holding one text returns that text's result.
    """

    task = "fill-mask"
    head = modeling.AlbertForMaskedLM
    uses = ("albert/embeddings/", "albert/encoder/", "predictions/")

    @staticmethod
    def _forward(module, ids, mask, types, positions):
        """MLM probabilities at `positions` [B, P] only: [B, P, V] float32."""
        hidden = module.albert(ids, mask, types).last_hidden_state
        hidden = jnp.take_along_axis(hidden, positions[..., None], axis=1)
        return jax.nn.softmax(module.predictions(hidden, module.albert).astype(jnp.float32), axis=-1)

    def __call__(self, inputs, top_k: int = 5, targets=None):
        _check_positive_int("top_k", top_k)
        results = super().__call__(inputs, top_k=top_k, target_ids=self._target_ids(targets))
        return results[0] if isinstance(inputs, list) and len(inputs) == 1 else results

    def _target_ids(self, targets) -> np.ndarray | None:
        if targets is None:
            return None
        ids = set()
        for target in [targets] if isinstance(targets, str) else targets:
            token_id = self.tokenizer.convert_tokens_to_ids(target)
            if self.tokenizer.convert_ids_to_tokens(token_id) != target:
                pieces = self.tokenizer.encode(target, add_special_tokens=False)
                if not pieces:
                    logger.warning("target %r is empty once tokenized; ignoring it", target)
                    continue
                token_id = pieces[0]
                logger.warning(
                    "target %r is not in the vocabulary; using its first piece %r",
                    target,
                    self.tokenizer.convert_ids_to_tokens(token_id),
                )
            ids.add(token_id)
        if not ids:
            raise PipelineError(f"none of the targets {targets!r} gives a token")
        return np.asarray(sorted(ids))

    def _postprocess(self, rows, top_k, target_ids):
        mask_id = self.tokenizer.mask_token_id
        positions = [np.flatnonzero(r["input_ids"] == mask_id) for r in rows]
        for r, p in zip(rows, positions):
            if not len(p):
                text = self.tokenizer.decode(r["input_ids"], skip_special_tokens=True)
                raise PipelineError(f"no mask token ({self.tokenizer.mask_token}) found in the input {text!r}")
        ids, mask, types = self._pad(rows)
        gather = np.zeros((len(ids), _bucket(max(map(len, positions)))), np.int32)
        for i, p in enumerate(positions):
            gather[i, : len(p)] = p
        probs = np.asarray(self._apply(self.params, ids, mask, types, gather))
        k = top_k if target_ids is None else min(top_k, len(target_ids))
        results = []
        for i, (r, where) in enumerate(zip(rows, positions)):
            per_mask = []
            for j, position in enumerate(where):
                candidates = probs[i, j] if target_ids is None else probs[i, j, target_ids]
                best = np.argsort(-candidates, kind="stable")[:k]
                per_mask.append(
                    [
                        self._proposal(
                            r["input_ids"],
                            position,
                            candidates[b],
                            int(b if target_ids is None else target_ids[b]),
                            len(where) == 1,
                        )
                        for b in best
                    ]
                )
            results.append(per_mask[0] if len(where) == 1 else per_mask)
        return results

    def _proposal(self, input_ids, position, score, token, single_mask) -> dict[str, Any]:
        filled = input_ids.copy()
        filled[position] = token
        filled = filled[filled != self.tokenizer.pad_token_id]
        # transformers keeps special tokens with several masks, so that the other [MASK]s stay visible
        return {
            "score": float(score),
            "token": token,
            "token_str": self.tokenizer.decode([token]),
            "sequence": self.tokenizer.decode(filled, skip_special_tokens=single_mask),
        }


class FeatureExtractionPipeline(_Pipeline):
    """`__call__(text or list of texts, return_tensors=False)`: per text the last hidden state of every
    token (special tokens included) as a nested list [1, T, H], or float32 numpy with `return_tensors=True`."""

    task = "feature-extraction"
    head = modeling.AlbertForMaskedLM  # its backbone has no pooler, which this task does not need
    uses = ("albert/embeddings/", "albert/encoder/")

    @staticmethod
    def _forward(module, ids, mask, types):
        return module.albert(ids, mask, types).last_hidden_state.astype(jnp.float32)

    def __call__(self, inputs, return_tensors: bool = False):
        return super().__call__(inputs, return_tensors=return_tensors)

    def _postprocess(self, rows, return_tensors):
        hidden = np.asarray(self._apply(self.params, *self._pad(rows)))
        out = [hidden[i : i + 1, : len(r["input_ids"])] for i, r in enumerate(rows)]
        return out if return_tensors else [x.tolist() for x in out]


class SentenceOrderPipeline(_Pipeline):
    """`__call__((a, b) or list of pairs)`: {'label': 'in_order' | 'swapped', 'score'} per pair, from the
    SOP head's softmax (label 0 of transformers' `sentence_order_label` is 'in_order')."""

    task = "sentence-order"
    head = modeling.AlbertForPreTraining
    uses = ("albert/", "sop_classifier/")

    @staticmethod
    def _forward(module, ids, mask, types):
        pooled = module.albert(ids, mask, types).pooler_output
        return jax.nn.softmax(module.sop_classifier(pooled, True).astype(jnp.float32), axis=-1)

    def __call__(self, inputs):
        return super().__call__(inputs)

    def _encode(self, items):
        for item in items:
            if isinstance(item, str) or self._as_pair(item)[1] is None:
                raise PipelineError(
                    f"sentence-order takes pairs of texts, (a, b) or {{'text': a, 'text_pair': b}}; got {item!r:.80}"
                )
        return super()._encode(items)

    def _postprocess(self, rows):
        probs = np.asarray(self._apply(self.params, *self._pad(rows)))[: len(rows)]
        return [{"label": SOP_LABELS[int(p.argmax())], "score": float(p.max())} for p in probs]


TASKS = {cls.task: cls for cls in (FillMaskPipeline, FeatureExtractionPipeline, SentenceOrderPipeline)}


def pipeline(task: str, model, tokenizer=None, batch_size: int = 16) -> _Pipeline:
    """A pipeline for `task` ('fill-mask', 'feature-extraction' or 'sentence-order').

    `model`: a directory (albert-jax or transformers; its spiece.model is the tokenizer unless `tokenizer`
    is given) or a `(AlbertConfig, params)` pair. `tokenizer`: an `AlbertTokenizer`, a directory holding
    spiece.model, or a `.model` file. `batch_size`: inputs per model call.
    Raises PipelineError (a ValueError) for an unknown task, a `batch_size` that is not a positive int,
    a model without the task's head or a tokenizer whose vocabulary size differs from the model's
    `vocab_size`; FileNotFoundError without a spiece.model.
    """
    from albert_jax import pretrained
    from albert_jax.tokenizer import AlbertTokenizer, check_vocab_size

    if task not in TASKS:
        raise PipelineError(f"unknown task {task!r}; available: {sorted(TASKS)}")
    if isinstance(model, (str, os.PathLike)):
        config, params = pretrained.from_pretrained(os.fspath(model))
        tokenizer = model if tokenizer is None else tokenizer
    else:
        config, params = model
        if tokenizer is None:
            raise PipelineError("a tokenizer is needed when the model is given as (config, params)")
    if isinstance(tokenizer, (str, os.PathLike)):
        source = os.fspath(tokenizer)
        try:
            tokenizer = AlbertTokenizer.from_pretrained(source) if os.path.isdir(source) else AlbertTokenizer(source)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e}; the pipeline needs the model's spiece.model (or pass tokenizer=)") from None
    try:
        check_vocab_size(tokenizer, config.vocab_size)
    except ValueError as e:
        raise PipelineError(str(e)) from None
    return TASKS[task](config, params, tokenizer, batch_size)
