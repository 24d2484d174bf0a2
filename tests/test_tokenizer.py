"""albert_jax.tokenizer against transformers' AlbertTokenizer and against sentencepiece directly.

A small vocabulary is trained here on Python's own documentation topics. transformers 5's
`AlbertTokenizer` (tokenizers backend) is the reference for ids, offsets, truncation, overflow and
decode; on pieces ending in digit + "," it deviates from the original ALBERT algorithm (it keeps "▁3,"
whole), so those inputs are checked against `_original_pieces`, a direct sentencepiece transcription
of google-research/albert's `tokenization.py`.
"""

import json
import pydoc_data.topics
import random
import unicodedata

import numpy as np
import pytest
import sentencepiece as spm

from albert_jax.tokenizer import (
    ALBERT_USER_DEFINED_SYMBOLS,
    AlbertTokenizer,
    check_vocab_size,
    preprocess_text,
    train_spm,
)

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

VOCAB_SIZE = 1000
SPECIAL_IDS = {"<pad>": 0, "<unk>": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
DOCS = "\n".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics))
_rng = random.Random(0)
# Numbers with a decimal comma give the vocabulary pieces like "▁3,", which the digit-comma rule re-splits.
CORPUS = DOCS[:100_000].splitlines() + [
    f"In {_rng.randint(1800, 2020)} the town had {_rng.randint(1, 20)},{_rng.randint(0, 999):03d} people and "
    f"{_rng.randint(1, 9)},{_rng.randint(0, 99):02d} € of debt."
    for _ in range(300)
]
# Paragraphs the vocabulary was not trained on.
PARAGRAPHS = [p for p in DOCS[150_000:].split("\n\n") if len(p) > 200][:40]
TEXTS = [
    "Hello I'm a [MASK] model.",
    "Crème Brûlée, jalapeño, piñata, naïve café",
    "東京は日本の首都",
    "emoji 😀 and 🎉 party",
    "tabs\tand\nnew lines   and  many   spaces ",
    "",
    "   ",
    "[MASK]",
    "a[MASK]b  [MASK][MASK]  [SEP] [CLS]x<unk> <pad>",
    "``quoted'' text and ‘curly’ “quotes”",
    "ﬁne Ⅻ ＡＢＣ İstanbul ΟΔΟΣ",
    "x" * 300,
    "ALL CAPS and MiXeD cAsE",
]
DIGIT_COMMA = ["1,000.5", "3,50 €", "10,000 people", "call f(expression1, expression2) with 4,5,6,"]


def _original_preprocess(text):
    """google-research/albert `preprocess_text` (remove_space, accents stripped, lower) plus transformers'
    `` and '' -> " rewrite, which the original does not have (checked against transformers on TEXTS)."""
    text = " ".join(text.strip().split()).replace("``", '"').replace("''", '"')
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).lower()


def _ends_in_digit_comma(piece):
    return len(piece) > 1 and piece[-1] == "," and piece[-2].isdigit()


def _original_pieces(sp, text):
    """google-research/albert `encode_pieces` on sentencepiece itself."""
    pieces = []
    for piece in sp.encode(_original_preprocess(text), out_type=str):
        if _ends_in_digit_comma(piece):
            cur = sp.encode(piece[:-1].replace("▁", ""), out_type=str)
            if piece[0] != "▁" and cur[0][0] == "▁":
                cur = cur[1:] if len(cur[0]) == 1 else [cur[0][1:]] + cur[1:]
            pieces += cur + [","]
        else:
            pieces.append(piece)
    return pieces


def _has_digit_comma(sp, text):
    return any(map(_ends_in_digit_comma, sp.encode(_original_preprocess(text), out_type=str)))


def _vocab(model_file):
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    return [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(our tokenizer, transformers' tokenizer, raw sentencepiece) over one freshly trained vocabulary."""
    work = tmp_path_factory.mktemp("spm")
    model = train_spm(iter(CORPUS), VOCAB_SIZE, str(work / "albert"))
    ours = AlbertTokenizer(model)
    ours.save_pretrained(work / "saved")
    hf = transformers.AlbertTokenizer.from_pretrained(str(work / "saved"))
    return ours, hf, spm.SentencePieceProcessor(model_file=model), work / "saved"


def _hf_batch(hf, *args, **kwargs):
    out = hf(*args, return_tensors="np", return_token_type_ids=True, return_attention_mask=True, **kwargs)
    return {k: np.asarray(v) for k, v in out.items()}


def _assert_same_batch(ours, theirs):
    assert set(ours) == set(theirs)
    for key in ours:
        assert ours[key].dtype == np.int32, key
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)


def test_texts_avoid_the_digit_comma_rule(saved):
    # The transformers parity below would be meaningless for texts where transformers is known to differ.
    sp = saved[2]
    assert not [t for t in TEXTS + PARAGRAPHS if _has_digit_comma(sp, t)]
    assert all(_has_digit_comma(sp, t) for t in DIGIT_COMMA)


def test_single_texts_match_transformers(saved):
    ours, hf, _, _ = saved
    for text in TEXTS + PARAGRAPHS:
        mine = ours(text, return_offsets_mapping=True)
        _assert_same_batch(mine, _hf_batch(hf, [text], return_offsets_mapping=True))
        assert ours.encode(text) == hf.encode(text)
        assert ours.convert_tokens_to_ids(ours.tokenize(text)) == hf.encode(text, add_special_tokens=False)
        for skip in (False, True):
            assert ours.decode(mine["input_ids"][0], skip) == hf.decode(hf.encode(text), skip_special_tokens=skip)


def test_batches_and_pairs_match_transformers(saved):
    ours, hf, _, _ = saved
    firsts, seconds = TEXTS + PARAGRAPHS[:3], PARAGRAPHS[3:6] + TEXTS
    for kwargs in ({}, {"add_special_tokens": False}):
        _assert_same_batch(
            ours(firsts, seconds, padding=True, return_offsets_mapping=True, **kwargs),
            _hf_batch(hf, firsts, seconds, padding=True, return_offsets_mapping=True, **kwargs),
        )
    _assert_same_batch(
        ours(TEXTS, padding="max_length", max_length=400, truncation=True),
        _hf_batch(hf, TEXTS, padding="max_length", max_length=400, truncation=True),
    )
    assert ours.encode("Hello world", "Bye") == hf.encode("Hello world", "Bye")


@pytest.mark.parametrize("truncation", [True, "longest_first", "only_first", "only_second"])
@pytest.mark.parametrize("stride", [0, 4])
def test_truncation_and_overflow_match_transformers(saved, truncation, stride):
    ours, hf, _, _ = saved
    short, long = ["Who [MASK] it?", "Crème Brûlée?", ""], PARAGRAPHS[:3]
    compared = 0
    for firsts, seconds in ((short, long), (long, short), (long, long[::-1]), (long, None)):
        if seconds is None and truncation == "only_second":
            with pytest.raises(ValueError, match="only_second"):
                ours(firsts, max_length=32, truncation=truncation)
            continue
        for max_length, overflow in ((32, True), (48, False), (80, True)):
            kwargs = dict(
                max_length=max_length,
                truncation=truncation,
                stride=stride,
                padding="max_length",
                return_overflowing_tokens=overflow,
                return_offsets_mapping=True,
            )
            try:
                expected = _hf_batch(hf, firsts, seconds, **kwargs)
            except Exception:  # the kept sequence alone exceeds max_length: both must refuse
                with pytest.raises(ValueError, match="cannot truncate"):
                    ours(firsts, seconds, **kwargs)
                continue
            _assert_same_batch(ours(firsts, seconds, **kwargs), expected)
            compared += 1
    assert compared >= 3  # each strategy has inputs it can truncate


def test_squad_windows_overlap_by_stride(saved):
    ours, hf, _, _ = saved
    question, context = "What does the assignment statement do?", PARAGRAPHS[0]
    kwargs = dict(
        max_length=64,
        truncation="only_second",
        stride=16,
        padding="max_length",
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    batch = ours([question], [context], **kwargs)
    _assert_same_batch(batch, _hf_batch(hf, [question], [context], **kwargs))
    assert len(batch["input_ids"]) > 2 and set(batch["overflow_to_sample_mapping"]) == {0}
    in_context = (batch["token_type_ids"] == 1) & (batch["attention_mask"] == 1)
    in_context[np.arange(len(in_context)), in_context.sum(1) + in_context.argmax(1) - 1] = False  # final [SEP]
    windows = [ids[keep] for ids, keep in zip(batch["input_ids"], in_context)]
    for before, after in zip(windows, windows[1:]):
        np.testing.assert_array_equal(before[-16:], after[:16])
    # Offsets index the context string: each piece reads back from it (this context is plain ASCII).
    for ids, offsets, keep in zip(batch["input_ids"], batch["offset_mapping"], in_context):
        for piece, (start, end) in zip(ours.convert_ids_to_tokens(ids[keep]), offsets[keep]):
            # A lone "▁" takes the span of the character that follows it, as in transformers.
            assert piece.lstrip("▁") == context[start:end].lower() or (piece == "▁" and end == start + 1)


def test_mask_takes_the_spaces_on_its_left(saved):
    ours = saved[0]
    text = "Hello I'm a   [MASK] model."
    batch = ours(text, return_offsets_mapping=True)
    position = list(batch["input_ids"][0]).index(ours.mask_token_id)
    start, end = batch["offset_mapping"][0][position]
    assert text[start:end] == "   [MASK]"
    assert ours.tokenize("a [MASK]b") == ours.tokenize("a") + ["[MASK]"] + ours.tokenize("b")


def test_digit_comma_follows_the_original_algorithm(saved):
    # transformers 5 keeps pieces like "▁3," whole; the original re-splits them, so compare to sentencepiece.
    ours, _, sp, _ = saved
    for text in DIGIT_COMMA + TEXTS[:3] + PARAGRAPHS:
        if "[" in text:
            continue
        expected = _original_pieces(sp, text)
        assert ours.tokenize(text) == expected, text
        assert ours.encode(text, add_special_tokens=False) == [sp.piece_to_id(p) for p in expected]
    for text in DIGIT_COMMA:
        batch = ours(text, return_offsets_mapping=True)
        for piece, (start, end) in zip(
            ours.convert_ids_to_tokens(batch["input_ids"][0][1:-1]), batch["offset_mapping"][0][1:-1]
        ):
            assert piece.lstrip("▁") == text[start:end] or (piece == "▁" and end == start + 1), (text, piece)


def test_preprocessing_is_the_original_plus_the_quote_rewrite(saved):
    for text in TEXTS + DIGIT_COMMA + PARAGRAPHS:
        assert preprocess_text(text) == saved[0]._preprocess(text)[0] == _original_preprocess(text)
    assert preprocess_text("``Quoted''  Text") == '"quoted" text'


def test_user_defined_symbols_follow_the_original_algorithm(tmp_path):
    model = train_spm(iter(CORPUS), VOCAB_SIZE, str(tmp_path / "uds"), user_defined_symbols=ALBERT_USER_DEFINED_SYMBOLS)
    ours, sp = AlbertTokenizer(model), spm.SentencePieceProcessor(model_file=model)
    assert [sp.id_to_piece(i) for i in range(5, 13)] == list(ALBERT_USER_DEFINED_SYMBOLS)
    for text in DIGIT_COMMA + PARAGRAPHS[:10]:
        assert ours.tokenize(text) == _original_pieces(sp, text)


@pytest.mark.parametrize("flags", [{"keep_accents": True}, {"do_lower_case": False}])
def test_preprocessing_flags_round_trip_and_match_transformers(saved, tmp_path, flags):
    ours = AlbertTokenizer(saved[0].vocab_file, **flags)
    ours.save_pretrained(tmp_path)
    hf = transformers.AlbertTokenizer.from_pretrained(str(tmp_path))
    reloaded = AlbertTokenizer.from_pretrained(tmp_path)
    assert (reloaded.keep_accents, reloaded.do_lower_case) == (ours.keep_accents, ours.do_lower_case)
    texts = ["Crème Brûlée ÀÉÎ", "ALL CAPS and MiXeD cAsE"] + PARAGRAPHS[:5]
    _assert_same_batch(
        ours(texts, padding=True, return_offsets_mapping=True),
        _hf_batch(hf, texts, padding=True, return_offsets_mapping=True),
    )
    assert ours.tokenize(texts[0]) != saved[0].tokenize(texts[0])


def test_train_spm_from_files_and_iterator(tmp_path, saved):
    half = len(CORPUS) // 2
    files = [tmp_path / "a.txt", tmp_path / "b.txt"]
    files[0].write_text("\n".join(CORPUS[:half]) + "\n\n", encoding="utf-8")
    files[1].write_text("\n".join(CORPUS[half:]), encoding="utf-8")
    from_files = train_spm(files, VOCAB_SIZE, str(tmp_path / "files"))
    from_iterator = train_spm((line for line in CORPUS), VOCAB_SIZE, str(tmp_path / "iter"))
    # Same sentences and seed: the same pieces and scores, also as the fixture's model (the files differ
    # only in the model_prefix they record).
    assert _vocab(from_files) == _vocab(from_iterator) == _vocab(saved[0].vocab_file)

    tok = AlbertTokenizer(from_files)
    tok.save_pretrained(tmp_path / "saved")
    hf = transformers.AlbertTokenizer.from_pretrained(str(tmp_path / "saved"))
    sp = spm.SentencePieceProcessor(model_file=from_files)
    assert sp.get_piece_size() == tok.vocab_size == len(hf) == VOCAB_SIZE
    for token, expected in SPECIAL_IDS.items():
        assert sp.piece_to_id(token) == hf.convert_tokens_to_ids(token) == tok.convert_tokens_to_ids(token)
        assert tok.convert_tokens_to_ids(token) == expected
    for name in ("pad", "unk", "cls", "sep", "mask"):
        expected = SPECIAL_IDS[getattr(hf, f"{name}_token")]
        assert getattr(tok, f"{name}_token_id") == getattr(hf, f"{name}_token_id") == expected
    assert sorted(tok.all_special_ids) == sorted(hf.all_special_ids) == [0, 1, 2, 3, 4]
    assert all(sp.is_control(i) for i in (2, 3, 4))
    # Lowercased before training: no learned piece holds an upper-case letter.
    assert not any(any(c.isupper() for c in sp.id_to_piece(i)) for i in range(5, sp.get_piece_size()))


def test_train_spm_seed_picks_the_sample(tmp_path):
    def sampled(seed, name):
        return _vocab(train_spm(iter(CORPUS), 300, str(tmp_path / name), input_sentence_size=500, seed=seed))

    assert sampled(0, "a") == sampled(0, "b") != sampled(1, "c")


def test_train_spm_on_a_corpus_too_small_for_the_vocabulary(tmp_path):
    sentences = ["a small corpus of few words.", "another line here."]
    with pytest.raises(
        ValueError,
        match=r"corpus is too small for a vocabulary of 600 pieces .*set it to a value "
        r"<= \d+\.\); lower vocab_size \(model\.vocab_size in a config\)",
    ) as error:
        train_spm(iter(sentences), 600, str(tmp_path / "small"))
    assert error.value.__cause__ is None and error.value.__suppress_context__  # no RuntimeError traceback


def test_from_pretrained_round_trip(saved, tmp_path):
    ours, _, _, directory = saved
    reloaded = AlbertTokenizer.from_pretrained(directory)
    assert reloaded.encode(PARAGRAPHS[0], PARAGRAPHS[1]) == ours.encode(PARAGRAPHS[0], PARAGRAPHS[1])
    config = json.loads((directory / "tokenizer_config.json").read_text())
    assert config["added_tokens_decoder"]["4"]["lstrip"] is True
    # A directory transformers saved (model_max_length=1e30 means no limit), plus the spiece.model.
    saved[1].save_pretrained(tmp_path)
    (tmp_path / "spiece.model").write_bytes((directory / "spiece.model").read_bytes())
    from_hf = AlbertTokenizer.from_pretrained(tmp_path)
    assert from_hf.model_max_length is None and from_hf.encode(PARAGRAPHS[0]) == ours.encode(PARAGRAPHS[0])
    limited = AlbertTokenizer.from_pretrained(tmp_path, model_max_length=16)
    assert limited([PARAGRAPHS[0]], truncation=True)["input_ids"].shape == (1, 16)


def test_missing_files_are_named(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        AlbertTokenizer.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="spiece.model"):
        AlbertTokenizer.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        train_spm([tmp_path / "missing.txt"], VOCAB_SIZE, str(tmp_path / "m"))


def test_corrupt_model_is_reported(tmp_path):
    (tmp_path / "spiece.model").write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ValueError, match=r"spiece\.model is not a SentencePiece model"):
        AlbertTokenizer.from_pretrained(tmp_path)


def test_model_without_special_pieces_is_rejected(tmp_path):
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS[:2000]), model_prefix=str(tmp_path / "plain"), vocab_size=300, minloglevel=2
    )
    with pytest.raises(ValueError, match=r"no piece '<pad>'"):
        AlbertTokenizer(tmp_path / "plain.model")
    with pytest.raises(ValueError, match=r"no piece '\[MASK\]'"):
        AlbertTokenizer(tmp_path / "plain.model", pad_token="<s>", cls_token="<s>", sep_token="</s>")


def test_vocab_size_mismatch_names_both_sizes(saved):
    check_vocab_size(saved[0], VOCAB_SIZE)
    with pytest.raises(ValueError, match=rf"{VOCAB_SIZE} pieces.*vocab_size=30000"):
        check_vocab_size(saved[0], 30000)


def test_bad_call_arguments(saved):
    ours = saved[0]
    with pytest.raises(ValueError, match="padding=True"):
        ours(["short", "a much longer text than the first"])
    with pytest.raises(ValueError, match="stride"):
        ours([PARAGRAPHS[0]], max_length=10, truncation=True, stride=8, return_overflowing_tokens=True)
    with pytest.raises(ValueError, match="truncation"):
        ours(["x"], truncation="longest")
