"""ALBERT's SentencePiece tokenizer (the original google-research algorithm) and vocabulary training.

Ids follow google-research/albert's `tokenization.py`, which the released checkpoints were trained with:
whitespace collapse, NFKD with accents stripped, lowercase, SentencePiece, then the digit-comma re-split
("▁3," -> "▁3", ","). From transformers' `AlbertTokenizer` instead: the quote pairs `` and '' -> " before
NFKD, and special tokens written in the text split out first, [MASK] swallowing the whitespace on its left.
Batches, offsets, truncation with stride and `decode` give what transformers' `AlbertTokenizer` gives for
the same spiece.model, except where transformers 5 leaves the original algorithm: pieces ending in digit +
"," (it keeps "▁3," whole) and user-defined symbols (it makes them added tokens and splits the text around
them). There we keep the original."""

from __future__ import annotations

import json
import os
import random
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import cast

import numpy as np
import sentencepiece as spm

VOCAB_FILE = "spiece.model"
SPIECE_UNDERLINE = "\u2581"
DEFAULT_SPECIAL_TOKENS = {
    "pad_token": "<pad>",
    "unk_token": "<unk>",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}
TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second")
_CONFIG_KEYS = ("do_lower_case", "remove_space", "keep_accents", "model_max_length")
_NO_LIMIT = 10**18  # transformers writes model_max_length=1e30 for "unlimited"


class AlbertTokenizer:
    """SentencePiece tokenizer with the original ALBERT preprocessing.

    Args:
      vocab_file: path of a SentencePiece `.model` holding `<pad> <unk> [CLS] [SEP] [MASK]`.
      do_lower_case, remove_space, keep_accents: the original preprocessing switches.
      model_max_length: length used when truncating or padding to 'max_length' without `max_length`.
      **special_tokens: override the strings of pad/unk/cls/sep/mask_token (ids come from the model).
    """

    # Set in __init__ from DEFAULT_SPECIAL_TOKENS (and the `**special_tokens` overrides).
    pad_token: str
    unk_token: str
    cls_token: str
    sep_token: str
    mask_token: str
    pad_token_id: int
    unk_token_id: int
    cls_token_id: int
    sep_token_id: int
    mask_token_id: int

    def __init__(
        self,
        vocab_file: str,
        do_lower_case: bool = True,
        remove_space: bool = True,
        keep_accents: bool = False,
        model_max_length: int | None = None,
        **special_tokens: str,
    ):
        unknown = set(special_tokens) - set(DEFAULT_SPECIAL_TOKENS)
        if unknown:
            raise TypeError(f"unexpected arguments {sorted(unknown)}")
        vocab_file = os.fspath(vocab_file)
        if not os.path.isfile(vocab_file):
            raise FileNotFoundError(f"SentencePiece model not found: {vocab_file}")
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.Load(model_file=vocab_file)
        except (RuntimeError, OSError) as err:
            raise ValueError(f"{vocab_file} is not a SentencePiece model ({err})") from err
        self.vocab_file = vocab_file
        self.do_lower_case, self.remove_space, self.keep_accents = do_lower_case, remove_space, keep_accents
        self.model_max_length = model_max_length
        for name, default in DEFAULT_SPECIAL_TOKENS.items():
            token = special_tokens.get(name, default)
            token_id = self.sp.piece_to_id(token)
            # piece_to_id answers unk_id for absent pieces, so check the round trip.
            if self.sp.id_to_piece(token_id) != token:
                raise ValueError(
                    f"{vocab_file} has no piece {token!r} required as {name}; train it with "
                    "train_spm or pass the model's own token string"
                )
            setattr(self, name, token)
            setattr(self, name + "_id", token_id)
        self.all_special_tokens = [getattr(self, n) for n in DEFAULT_SPECIAL_TOKENS]
        self.all_special_ids = [self.sp.piece_to_id(t) for t in self.all_special_tokens]
        # Longest first so that a special token containing another one wins, as transformers' trie does.
        by_length = sorted(self.all_special_tokens, key=len, reverse=True)
        self._special_re = re.compile("|".join(map(re.escape, by_length)))

    @classmethod
    def from_pretrained(cls, directory: str, **overrides) -> AlbertTokenizer:
        """Loads `directory/spiece.model` plus `tokenizer_config.json` / `special_tokens_map.json` if present."""
        directory = os.fspath(directory)
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"tokenizer directory not found: {directory}")
        kwargs = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    config = json.load(f)
                for key in (*_CONFIG_KEYS, *DEFAULT_SPECIAL_TOKENS):
                    if key in config:
                        value = config[key]
                        kwargs[key] = value["content"] if isinstance(value, dict) else value
        if (kwargs.get("model_max_length") or 0) > _NO_LIMIT:
            kwargs["model_max_length"] = None
        kwargs.update(overrides)
        return cls(os.path.join(directory, VOCAB_FILE), **kwargs)

    def save_pretrained(self, directory: str) -> None:
        """Writes `spiece.model`, `tokenizer_config.json` and `special_tokens_map.json` into `directory`.

        The files are the ones transformers' `AlbertTokenizer.from_pretrained` reads, `[MASK]` with lstrip.
        """
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, VOCAB_FILE), "wb") as f:
            f.write(self.sp.serialized_model_proto())
        specials = {name: getattr(self, name) for name in DEFAULT_SPECIAL_TOKENS}
        specials.update(bos_token=self.cls_token, eos_token=self.sep_token)
        # transformers takes each special token's flags (lstrip for [MASK]) from `added_tokens_decoder`.
        added = {
            str(getattr(self, n + "_id")): {
                "content": getattr(self, n),
                "lstrip": n == "mask_token",
                "rstrip": False,
                "normalized": False,
                "single_word": False,
                "special": True,
            }
            for n in DEFAULT_SPECIAL_TOKENS
        }
        config = {
            "tokenizer_class": "AlbertTokenizer",
            "do_lower_case": self.do_lower_case,
            "remove_space": self.remove_space,
            "keep_accents": self.keep_accents,
            **specials,
            "added_tokens_decoder": added,
        }
        if self.model_max_length is not None:
            config["model_max_length"] = self.model_max_length
        for name, content in (("tokenizer_config.json", config), ("special_tokens_map.json", specials)):
            with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
                json.dump(content, f, indent=2, ensure_ascii=False)

    @property
    def vocab_size(self) -> int:
        """Number of pieces, special ones included."""
        return self.sp.get_piece_size()

    # --- text -> pieces ---------------------------------------------------------------------------

    def _preprocess(self, text: str) -> tuple[str, list[tuple[int, int]]]:
        """`preprocess_text`, returning also each output char's span in `text`."""
        if self.remove_space:
            # " ".join(text.strip().split()); a separator gets the span of its run's last whitespace char.
            chars, spans = [], []
            for match in re.finditer(r"\S+", text):
                if chars:
                    chars.append(" ")
                    spans.append((match.start() - 1, match.start()))
                chars.extend(match.group())
                spans.extend((i, i + 1) for i in range(match.start(), match.end()))
        else:
            chars, spans = list(text), [(i, i + 1) for i in range(len(text))]
        # `` and '' -> "; transformers aligns the '"' with the second character of the pair.
        firsts = {m.start() for m in re.finditer("``|''", "".join(chars))}
        chars = ['"' if i - 1 in firsts else c for i, c in enumerate(chars) if i not in firsts]
        spans = [s for i, s in enumerate(spans) if i not in firsts]
        if not self.keep_accents:
            # Per-char NFKD equals whole-string NFKD once combining marks (the only reordered chars) go.
            pairs = [
                (d, s)
                for c, s in zip(chars, spans)
                for d in unicodedata.normalize("NFKD", c)
                if not unicodedata.combining(d)
            ]
            chars, spans = [c for c, _ in pairs], [s for _, s in pairs]
        if self.do_lower_case:
            # Whole-string lower() handles the final sigma; it never changes a char's expansion length.
            lowered = "".join(chars).lower()
            spans = [s for c, s in zip(chars, spans) for _ in range(len(c.lower()))]
            chars = list(lowered)
        return "".join(chars), spans

    def _encode_text(self, text: str, with_spans: bool = True) -> list[tuple[str, int, tuple[int, int] | None]]:
        """(piece, id, (start, end) in `text`, or None without `with_spans`) for text holding no special
        token. Character spans cost most of the time; pretraining does not need them."""
        if with_spans:
            norm, spans = self._preprocess(text)
        else:
            norm = preprocess_text(text, self.do_lower_case, self.remove_space, self.keep_accents)
        if not norm:
            return []
        encoded = self.sp.encode(norm, return_type="offset_mapping")

        def span_of(begin, end):
            # Whitespace became "▁"; like transformers, a piece's span starts at its first real char,
            # and a piece with none (a lone "▁") takes the span of the char that follows it.
            if not with_spans:
                return None
            while begin < end and norm[begin].isspace():
                begin += 1
            if begin == end:
                return spans[min(begin, len(norm) - 1)]
            return spans[begin][0], spans[end - 1][1]

        out = []
        for piece, piece_id, (begin, end) in zip(encoded["pieces"], encoded["ids"], encoded["offsets"]):
            if len(piece) > 1 and piece[-1] == "," and piece[-2].isdigit():
                out.extend(self._split_digit_comma(piece, begin, end, span_of))
            else:
                out.append((piece, piece_id, span_of(begin, end)))
        return out

    def _split_digit_comma(self, piece, begin, end, span_of):
        """The original rule: "▁3," is re-encoded without the comma, then "," is appended."""
        sub = self.sp.encode(piece[:-1].replace(SPIECE_UNDERLINE, ""), out_type=str)
        if piece[0] != SPIECE_UNDERLINE and sub[0][0] == SPIECE_UNDERLINE:
            sub = sub[1:] if len(sub[0]) == 1 else [sub[0][1:]] + sub[1:]
        out, pos = [], end - 1 - sum(len(p.replace(SPIECE_UNDERLINE, "")) for p in sub)
        for p in sub:
            width = len(p.replace(SPIECE_UNDERLINE, ""))
            out.append((p, self.sp.piece_to_id(p), span_of(max(pos, begin), max(pos + width, begin))))
            pos += width
        out.append((",", self.sp.piece_to_id(","), span_of(end - 1, end)))
        return out

    def _tokenize(self, text: str, with_spans: bool = True) -> list[tuple[str, int, tuple[int, int] | None]]:
        """Splits out special tokens ([MASK] taking the whitespace on its left), encodes the rest."""
        out, pos = [], 0

        def encode(part, offset):
            return [
                (piece, piece_id, span and (span[0] + offset, span[1] + offset))
                for piece, piece_id, span in self._encode_text(part, with_spans)
            ]

        for match in self._special_re.finditer(text):
            start = match.start()
            if match.group() == self.mask_token:
                start = pos + len(text[pos:start].rstrip())
            out.extend(encode(text[pos:start], pos))
            out.append((match.group(), self.sp.piece_to_id(match.group()), (start, match.end())))
            pos = match.end()
        out.extend(encode(text[pos:], pos))
        return out

    def tokenize(self, text: str) -> list[str]:
        """Pieces of `text`; unknown characters keep their surface form, as in the original."""
        return [piece for piece, _, _ in self._tokenize(text, with_spans=False)]

    def pieces_and_ids(self, text: str) -> tuple[list[str], list[int]]:
        """(pieces, ids) of `text`, as `tokenize` + `convert_tokens_to_ids` but in one pass (pieces the
        vocabulary lacks keep their surface form and get `unk_token_id`)."""
        tokens = self._tokenize(text, with_spans=False)
        return [piece for piece, _, _ in tokens], [piece_id for _, piece_id, _ in tokens]

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Piece(s) -> id(s); pieces outside the vocabulary give `unk_token_id`."""
        if isinstance(tokens, str):
            return self.sp.piece_to_id(tokens)
        return [self.sp.piece_to_id(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int]) -> str | list[str]:
        """Id(s) -> piece(s)."""
        if isinstance(ids, (int, np.integer)):
            return self.sp.id_to_piece(int(ids))
        return [self.sp.id_to_piece(int(i)) for i in ids]

    # --- ids ---------------------------------------------------------------------------------------

    def build_inputs_with_special_tokens(self, ids_a: list[int], ids_b: list[int] | None = None) -> list[int]:
        """`[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]`."""
        ids = [self.cls_token_id, *ids_a, self.sep_token_id]
        return ids if ids_b is None else ids + [*ids_b, self.sep_token_id]

    def create_token_type_ids_from_sequences(self, ids_a: list[int], ids_b: list[int] | None = None) -> list[int]:
        """0 for `[CLS] A [SEP]`, 1 for `B [SEP]`."""
        types = [0] * (len(ids_a) + 2)
        return types if ids_b is None else types + [1] * (len(ids_b) + 1)

    def encode(self, text: str, text_pair: str | None = None, add_special_tokens: bool = True) -> list[int]:
        """Ids of `text` (and `text_pair`), with `[CLS]`/`[SEP]` unless `add_special_tokens=False`; untruncated."""
        b = None if text_pair is None else self._tokenize(text_pair)
        return [i for _, i, _, _ in self._assemble(self._tokenize(text), b, add_special_tokens)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids`, the string transformers' `decode` gives: "▁" -> " ", none before the first token."""
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        pieces = [self.sp.id_to_piece(int(i)) for i in ids if int(i) not in skip]
        return "".join(p.replace(SPIECE_UNDERLINE, "" if n == 0 else " ") for n, p in enumerate(pieces))

    def __call__(
        self,
        texts: str | Sequence[str],
        text_pairs: str | Sequence[str] | None = None,
        *,
        add_special_tokens: bool = True,
        max_length: int | None = None,
        truncation: bool | str | None = None,
        padding: bool | str = False,
        return_offsets_mapping: bool = False,
        return_overflowing_tokens: bool = False,
        stride: int = 0,
    ) -> dict[str, np.ndarray]:
        """Encodes a batch the way transformers' `tokenizer(texts, text_pairs, ...)` does.

        A single `str` (and pair) is a batch of one. `truncation`: None/False, True (= 'longest_first'),
        'longest_first', 'only_first' or 'only_second'; as in transformers, `max_length` alone (no padding)
        turns on 'longest_first'. `padding`: False, True/'longest' or 'max_length'. With
        `return_overflowing_tokens`, every truncated sequence yields further windows that overlap by
        `stride` tokens (the SQuAD use: `truncation='only_second'`).

        Returns numpy int32 arrays of shape [N, T]: `input_ids`, `attention_mask`, `token_type_ids`;
        `offset_mapping` [N, T, 2] (character spans in the input strings, (0, 0) for special tokens and
        padding) and `overflow_to_sample_mapping` [N] (the input index of each row) when asked. N is the
        batch size, or the number of windows with overflow. Rows of unequal length need padding.
        """
        if isinstance(texts, str):
            # A single text's pair is a single str.
            texts, text_pairs = [texts], None if text_pairs is None else [cast(str, text_pairs)]
        if not texts or (text_pairs is not None and len(text_pairs) != len(texts)):
            raise ValueError(
                f"need a non-empty batch and as many text_pairs as texts; got {len(texts)} texts "
                f"and {'no' if text_pairs is None else len(text_pairs)} text_pairs"
            )
        if truncation is True or (max_length is not None and padding is False and truncation is None):
            truncation = "longest_first"
        if truncation and truncation not in TRUNCATION_STRATEGIES:
            raise ValueError(
                f"truncation must be None, False, True or one of {TRUNCATION_STRATEGIES}; got {truncation!r}"
            )
        padding = "longest" if padding is True else padding
        if padding not in (False, "longest", "max_length"):
            raise ValueError(f"padding must be False, True, 'longest' or 'max_length'; got {padding!r}")
        if max_length is None and (truncation or padding == "max_length"):
            max_length = self.model_max_length
            if max_length is None and padding == "max_length":
                raise ValueError("padding='max_length' needs max_length (the tokenizer has no model_max_length)")

        rows, samples = [], []
        for index, text in enumerate(texts):
            a = self._tokenize(text)
            b = None if text_pairs is None else self._tokenize(text_pairs[index])
            windows = [(a, b)]
            if truncation and max_length is not None:
                n_added = (2 if b is None else 3) if add_special_tokens else 0
                windows = _truncate(a, b, max_length - n_added, truncation, stride)
                if not return_overflowing_tokens:
                    windows = windows[:1]
            rows.extend(self._assemble(wa, wb, add_special_tokens) for wa, wb in windows)
            samples.extend([index] * len(windows))

        lengths = [len(row) for row in rows]
        if padding == "max_length":
            assert max_length is not None  # raised above otherwise
            width = max_length
        else:
            width = max(lengths) if padding else min(lengths)
        if max(lengths) > width:
            raise ValueError(
                f"sequences have different lengths ({min(lengths)} to {max(lengths)} tokens); pass "
                "padding=True, or padding='max_length' with truncation"
            )
        pad = (None, self.pad_token_id, 0, (0, 0))
        table = np.array(
            [[(i, k, *span) for _, i, k, span in row + [pad] * (width - len(row))] for row in rows], np.int32
        ).reshape(len(rows), width, 4)
        out = {
            "input_ids": table[..., 0],
            # Padding is masked by position: a "<pad>" written in the text is a real token.
            "attention_mask": (np.arange(width)[None, :] < np.array(lengths)[:, None]).astype(np.int32),
            "token_type_ids": table[..., 1],
        }
        if return_offsets_mapping:
            out["offset_mapping"] = table[..., 2:]
        if return_overflowing_tokens:
            out["overflow_to_sample_mapping"] = np.array(samples, np.int32)
        return out

    def _assemble(self, a, b, add_special_tokens):
        """One row of (piece, id, token_type, span): `[CLS] A [SEP]` type 0, `B [SEP]` type 1."""
        cls, sep = (self.cls_token, self.cls_token_id, (0, 0)), (self.sep_token, self.sep_token_id, (0, 0))
        first = [cls, *a, sep] if add_special_tokens else list(a)
        second = [] if b is None else [*b, sep] if add_special_tokens else list(b)
        return [(p, i, 0, s) for p, i, s in first] + [(p, i, 1, s) for p, i, s in second]


def check_vocab_size(tokenizer: AlbertTokenizer, config_vocab_size: int) -> None:
    """Raises ValueError unless the tokenizer's vocabulary has exactly `config_vocab_size` pieces."""
    if tokenizer.vocab_size != config_vocab_size:
        raise ValueError(
            f"tokenizer vocabulary has {tokenizer.vocab_size} pieces but the model config has "
            f"vocab_size={config_vocab_size}; use the spiece.model the model was trained with"
        )


def _truncate(a, b, max_len, strategy, stride):
    """Windows [(a_part, b_part), ...] as the tokenizers library cuts them.

    `max_len` is the token budget without special tokens. The first window is the truncated input; the
    others are the overflow, in the order in which tokenizers merges the two sequences' overflows.
    """
    if max_len <= 0:
        raise ValueError("max_length leaves no room for text next to the special tokens")
    total = len(a) + (0 if b is None else len(b))
    if total <= max_len:
        return [(a, b)]
    if strategy == "longest_first":
        if b is None:
            return [(w, None) for w in _windows(a, max_len, stride)]
        # Rust's rule: keep the shorter whole if the longer can fill the rest, else split the budget.
        n1, n2 = sorted((len(a), len(b)))
        n2 = n1 if n1 > max_len else max(n1, max_len - n1)
        if n1 + n2 > max_len:
            n1, n2 = max_len // 2, max_len // 2 + max_len % 2
        if len(a) > len(b):
            n1, n2 = n2, n1
        wa, wb = _windows(a, n1, stride), _windows(b, n2, stride)
    else:
        target = a if strategy == "only_first" else b
        if target is None:
            raise ValueError("truncation='only_second' needs text_pairs")
        keep = len(target) - (total - max_len)
        if keep <= 0:
            raise ValueError(
                f"cannot truncate with {strategy!r} to max_length: the other sequence alone "
                f"needs {total - len(target)} of the {max_len} tokens"
            )
        windows = _windows(target, keep, stride)
        wa, wb = (windows, [b]) if strategy == "only_first" else ([a], windows)
    return [(wa[0], wb[0])] + [(x, y) for x in wa[1:] for y in wb] + [(wa[0], y) for y in wb[1:]]


def _windows(seq, max_len, stride):
    """`seq` cut into windows of `max_len` that overlap by `stride` (tokenizers' `Encoding.truncate`)."""
    if len(seq) <= max_len:
        return [seq]
    if max_len == 0:
        return [seq[:0], seq]
    if stride >= max_len:
        raise ValueError(f"stride={stride} must be smaller than the {max_len} tokens a window holds")
    windows = []
    for start in range(0, len(seq), max_len - stride):
        windows.append(seq[start : start + max_len])
        if start + max_len >= len(seq):
            break
    return windows


def preprocess_text(
    text: str, do_lower_case: bool = True, remove_space: bool = True, keep_accents: bool = False
) -> str:
    """The text SentencePiece sees: ALBERT's `preprocess_text` plus transformers' `` and '' -> " (`_preprocess`)."""
    if remove_space:
        text = " ".join(text.strip().split())
    text = text.replace("``", '"').replace("''", '"')
    if not keep_accents:
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return text.lower() if do_lower_case else text


# The symbols google-research/albert gave spm_train for the released 30k vocabulary.
ALBERT_USER_DEFINED_SYMBOLS = ("(", ")", '"', "-", ".", "\u2013", "\u00a3", "\u20ac")


def train_spm(
    files_or_iterator: str | Sequence[str] | Iterable[str],
    vocab_size: int,
    out_prefix: str,
    *,
    model_type: str = "unigram",
    character_coverage: float = 0.9999,
    input_sentence_size: int = 1_000_000,
    seed: int = 0,
    do_lower_case: bool = True,
    keep_accents: bool = False,
    user_defined_symbols: Sequence[str] = (),
    num_threads: int | None = None,
) -> str:
    """Trains an ALBERT SentencePiece vocabulary and returns the path `<out_prefix>.model`.

    `files_or_iterator` is a text file path, a list or tuple of them (one sentence per line; blank lines,
    the document separators, are skipped) or any other iterable of sentences (e.g. a generator).
    The settings are google-research/albert's: `<pad>`=0, `<unk>`=1, no bos/eos, control symbols
    `[CLS]`=2 `[SEP]`=3 `[MASK]`=4, a unigram model over a random sample of `input_sentence_size`
    sentences (0: all; drawn with `seed`), spm's default case-preserving `nmt_nfkc` normalization.
    Sentences get the tokenizer's preprocessing (`preprocess_text`: lowercase, accents stripped) before
    training, so the vocabulary holds the pieces the tokenizer asks for; folding case in the model
    instead (`nmt_nfkc_cf`) would lowercase for `do_lower_case=False` tokenizers too. The released
    vocabulary also had `user_defined_symbols=ALBERT_USER_DEFINED_SYMBOLS`; they are off by default because
    transformers 5 makes such symbols added tokens and splits text around them, so its ids would differ
    from ours. The result depends only on the sentences and `seed`. ValueError if the text has fewer
    distinct pieces than `vocab_size`.
    """
    if isinstance(files_or_iterator, (str, os.PathLike)):
        files_or_iterator = [files_or_iterator]
    if isinstance(files_or_iterator, (list, tuple)):
        missing = [os.fspath(f) for f in files_or_iterator if not os.path.isfile(f)]
        if missing:
            raise FileNotFoundError(
                f"training text file(s) not found: {missing[:3]}; a list or tuple names "
                "files, pass sentences as an iterator, e.g. iter(sentences)"
            )
        sentences = _read_lines(files_or_iterator)
    else:
        sentences = iter(files_or_iterator)
    prepared = (p for p in (preprocess_text(s, do_lower_case, True, keep_accents) for s in sentences) if p)
    os.makedirs(os.path.dirname(os.path.abspath(out_prefix)), exist_ok=True)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(_sample(prepared, input_sentence_size, seed)),
            model_prefix=out_prefix,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            normalization_rule_name="nmt_nfkc",
            pad_id=0,
            pad_piece="<pad>",
            unk_id=1,
            unk_piece="<unk>",
            bos_id=-1,
            eos_id=-1,
            control_symbols=["[CLS]", "[SEP]", "[MASK]"],
            user_defined_symbols=list(user_defined_symbols),
            num_threads=num_threads or os.cpu_count() or 1,
            minloglevel=1,
        )
    except RuntimeError as err:
        if not (too_high := re.search(r"Vocabulary size too high.*", str(err))):
            raise
        raise ValueError(
            f"the corpus is too small for a vocabulary of {vocab_size} pieces ({too_high.group()}); "
            "lower vocab_size (model.vocab_size in a config) or use a bigger corpus"
        ) from None
    return out_prefix + ".model"


def _sample(sentences, size, seed):
    """A uniform sample of `size` sentences (reservoir sampling); all of them if fewer or `size` is 0.

    Done here rather than by spm's shuffle_input_sentence, whose sampler ignores the seed we set.
    """
    rng, reservoir = random.Random(seed), []
    for index, sentence in enumerate(sentences):
        if not size or index < size:
            reservoir.append(sentence)
        elif (slot := rng.randrange(index + 1)) < size:
            reservoir[slot] = sentence
    return reservoir


def _read_lines(paths):
    """The lines of the files `paths`, in order, each file closed once read."""
    for path in paths:
        with open(path, encoding="utf-8") as f:
            yield from f
