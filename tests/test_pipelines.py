"""albert_jax.pipeline against transformers.pipeline on the same random checkpoint and spiece.model.

The checkpoint is a random transformers `AlbertForPreTraining` (large initializer_range, so that the
top-k candidates are well separated) saved with a vocabulary trained here; transformers loads the
tokenizer from the same directory (tokenizers backend; the texts avoid digit-commas, so ids agree).
"""

import os
import pydoc_data.topics
import shutil

import numpy as np
import pytest

import albert_jax as aj
from albert_jax import convert, pretrained
from albert_jax.pipelines import PipelineError
from albert_jax.tokenizer import AlbertTokenizer, train_spm

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers.logging.set_verbosity_error()

DOCS = "\n".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics))
TOL = 1e-5
FILL_CASES = [
    ("Hello I'm a [MASK] model.", {}),
    (["The [MASK] statement is used to define a function.", "the [MASK]", "x [MASK] y [MASK]"], {"top_k": 3}),
    (["Hello [MASK] [MASK] model."], {"top_k": 2}),  # a list of one text returns that text's result
    ("Hello I'm a [MASK] model.", {"targets": ["class", "the", "zzzq"], "top_k": 2}),
    ("[MASK] is a name.", {"targets": "def", "top_k": 10}),
]
PAIRS = [
    ("The first sentence comes first.", "Then the second one follows."),
    ("Then the second one follows.", "The first sentence comes first."),
    ("A list is mutable.", "A tuple is not."),
]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    work = tmp_path_factory.mktemp("pipelines")
    tokenizer = AlbertTokenizer(train_spm(iter(DOCS[:60_000].splitlines()), 300, str(work / "spm")))
    config = transformers.AlbertConfig(
        vocab_size=tokenizer.vocab_size,
        embedding_size=16,
        hidden_size=32,
        num_attention_heads=4,
        intermediate_size=37,
        num_hidden_layers=2,
        max_position_embeddings=64,
        initializer_range=0.2,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    transformers.AlbertForPreTraining(config).save_pretrained(work / "hf")
    tokenizer.save_pretrained(work / "hf")
    return work / "hf"


def assert_same_predictions(ours, theirs):
    """Equal structure, tokens and strings; scores within TOL."""
    if isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            assert_same_predictions(a, b)
    else:
        assert {k: v for k, v in ours.items() if k != "score"} == {k: v for k, v in theirs.items() if k != "score"}
        assert abs(ours["score"] - theirs["score"]) < TOL


@pytest.mark.parametrize("inputs,kwargs", FILL_CASES)
def test_fill_mask_matches_transformers(hf_dir, inputs, kwargs):
    ours = aj.pipeline("fill-mask", model=hf_dir)(inputs, **kwargs)
    assert_same_predictions(ours, transformers.pipeline("fill-mask", model=str(hf_dir))(inputs, **kwargs))


def test_feature_extraction_matches_transformers(hf_dir):
    ours, theirs = (
        aj.pipeline("feature-extraction", model=hf_dir),
        transformers.pipeline("feature-extraction", model=str(hf_dir)),
    )
    texts = ["Hello world.", "A much longer sentence about the assignment statement and its targets."]
    single = ours(texts[0])
    assert np.shape(single) == np.shape(theirs(texts[0]))
    np.testing.assert_allclose(single, theirs(texts[0]), atol=TOL, rtol=0)
    for a, b in zip(ours(texts, return_tensors=True), theirs(texts, return_tensors=True)):
        assert a.dtype == np.float32 and a.shape == tuple(b.shape) and a.shape[0] == 1
        np.testing.assert_allclose(a, b.numpy(), atol=TOL, rtol=0)


def test_batches_of_sorted_lengths_come_back_in_input_order(hf_dir):
    """Chunks are cut from the inputs sorted by length: with batch_size 2 every chunk mixes other inputs
    than the given order would, and the results must still be each input's own, in the input order."""
    texts = [
        "A much longer sentence about the [MASK] statement and its many targets in a module.",
        "x [MASK]",
        "The [MASK] is defined here.",
        "[MASK] y",
        "A function is [MASK] by the def statement of a class.",
    ]
    fill = aj.pipeline("fill-mask", model=hf_dir, batch_size=2)
    assert_same_predictions(fill(texts, top_k=2), [fill(t, top_k=2) for t in texts])
    assert_same_predictions(fill(texts, top_k=2), transformers.pipeline("fill-mask", model=str(hf_dir))(texts, top_k=2))
    features = aj.pipeline("feature-extraction", model=hf_dir, batch_size=2)
    for text, batched in zip(texts, features(texts, return_tensors=True)):
        np.testing.assert_allclose(batched, features(text, return_tensors=True), atol=TOL, rtol=0)
    sop = aj.pipeline("sentence-order", model=hf_dir, batch_size=2)
    pairs = [(texts[i], texts[(i + 1) % len(texts)]) for i in range(len(texts))]
    for pair, batched in zip(pairs, sop(pairs)):
        assert_same_predictions(batched, sop(pair))


def test_sentence_order_is_the_sop_softmax(hf_dir):
    model = transformers.AlbertForPreTraining.from_pretrained(str(hf_dir), attn_implementation="eager").eval()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
    sop = aj.pipeline("sentence-order", model=hf_dir)
    results = sop(PAIRS + [{"text": PAIRS[0][0], "text_pair": PAIRS[0][1]}])
    assert_same_predictions(results[-1], results[0])
    assert_same_predictions(sop(PAIRS[1]), results[1])
    for (a, b), result in zip(PAIRS, results):
        with torch.no_grad():
            # transformers 5's AlbertTokenizer leaves token_type_ids out unless asked; the SOP head needs them
            inputs = hf_tokenizer(a, b, return_tensors="pt", return_token_type_ids=True)
            probs = model(**inputs).sop_logits.softmax(-1)[0].numpy()
        assert result["label"] == ("in_order", "swapped")[probs.argmax()]
        assert abs(result["score"] - probs.max()) < TOL


def test_model_as_config_params_and_as_our_directory(hf_dir, tmp_path):
    config, params = convert.load_hf(str(hf_dir))
    text = "Hello I'm a [MASK] model."
    expected = aj.pipeline("fill-mask", model=hf_dir)(text)
    assert aj.pipeline("fill-mask", model=(config, params), tokenizer=hf_dir / "spiece.model")(text) == expected
    pretrained.save_pretrained(config, params, str(tmp_path))
    shutil.copy(hf_dir / "spiece.model", tmp_path)
    assert aj.pipeline("fill-mask", model=str(tmp_path))(text) == expected


def test_one_compilation_per_shape_bucket(hf_dir):
    unmasker = aj.pipeline("fill-mask", model=hf_dir)
    cache_size = unmasker._apply._cache_size
    lengths = set()
    for text in ["a [MASK]", "the [MASK] of a function", "the [MASK] of the def statement"]:
        unmasker(text)
        lengths.add(len(unmasker.tokenizer.encode(text)))
    assert len(lengths) == 3 and max(lengths) <= 16 and cache_size() == 1  # one length bucket
    longer = "a [MASK] " + "the " * 20
    assert 16 < len(unmasker.tokenizer.encode(longer)) <= 32
    unmasker(longer)  # length bucket 32
    assert cache_size() == 2
    unmasker(["a [MASK]", "b [MASK]"])  # batch bucket 2
    assert cache_size() == 3
    unmasker(["a [MASK]", "b [MASK]", "the [MASK] is"])  # batch bucket 4
    unmasker(["a [MASK]", "b [MASK]", "c [MASK]", "d [MASK] e"])
    assert cache_size() == 4


# -- bad input --------------------------------------------------------------------------------------------
def test_text_without_mask(hf_dir):
    with pytest.raises(PipelineError, match=r"no mask token \(\[MASK\]\) found in the input 'no mask here'"):
        aj.pipeline("fill-mask", model=hf_dir)(["a [MASK]", "No mask here"])


def test_top_k_and_batch_size_must_be_positive_ints(hf_dir):
    unmasker = aj.pipeline("fill-mask", model=hf_dir)
    for top_k in (-1, 0, 2.0, True, "3", None):
        with pytest.raises(PipelineError, match=rf"top_k must be a positive int, got {top_k!r}$"):
            unmasker("a [MASK]", top_k=top_k)
    assert len(unmasker("a [MASK]", top_k=np.int64(1))) == 1
    for batch_size in (0, -2, 1.5, False):
        with pytest.raises(PipelineError, match=rf"batch_size must be a positive int, got {batch_size!r}$"):
            aj.pipeline("fill-mask", model=hf_dir, batch_size=batch_size)
    assert len(aj.pipeline("fill-mask", model=hf_dir, batch_size=1)(["a [MASK]", "b [MASK]"])) == 2


def test_vocabulary_size_mismatch(hf_dir, tmp_path):
    other = train_spm(iter(DOCS[:30_000].splitlines()), 200, str(tmp_path / "other"))
    with pytest.raises(
        PipelineError, match="tokenizer vocabulary has 200 pieces but the model config has vocab_size=300"
    ):
        aj.pipeline("fill-mask", model=hf_dir, tokenizer=other)


def test_missing_or_corrupt_spiece_model(hf_dir, tmp_path):
    shutil.copytree(hf_dir, tmp_path / "model")
    os.remove(tmp_path / "model" / "spiece.model")
    with pytest.raises(FileNotFoundError, match="spiece.model"):
        aj.pipeline("fill-mask", model=tmp_path / "model")
    (tmp_path / "model" / "spiece.model").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="spiece.model is not a SentencePiece model"):
        aj.pipeline("fill-mask", model=tmp_path / "model")
    config, params = convert.load_hf(str(hf_dir))
    with pytest.raises(PipelineError, match="tokenizer is needed"):
        aj.pipeline("fill-mask", model=(config, params))


def test_wrong_task_head_or_input(hf_dir, tmp_path):
    with pytest.raises(PipelineError, match="unknown task 'translation'"):
        aj.pipeline("translation", model=hf_dir)
    config, params = convert.load_hf(str(hf_dir))
    del params["predictions"]
    with pytest.raises(PipelineError, match="no parameters for 'fill-mask'.*predictions/bias"):
        aj.pipeline("fill-mask", model=(config, params), tokenizer=hf_dir)
    with pytest.raises(PipelineError, match="sentence-order takes pairs"):
        aj.pipeline("sentence-order", model=hf_dir)("just one text")
    with pytest.raises(PipelineError, match="longer than the model's max_position_embeddings"):
        aj.pipeline("feature-extraction", model=hf_dir)("word " * 100)
