"""What several test modules share: running `run.py` (its metrics, killing it mid-run), pretraining data (a
synthetic corpus, dynamically masked data, the tiny config's prepare settings), the GLUE files in the official
layout, the SQuAD tests' sentences and long example, a small transformers config, TensorBoard event files,
a file-size limit that makes writes fail."""

import contextlib
import glob
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import time

import ml_collections
import numpy as np
import transformers

from albert_jax import experiment
from albert_jax.data import prepare, records
from albert_jax.data.loader import PretrainingDataset
from albert_jax.data.pretraining import create_pairs, special_ids
from albert_jax.data.squad import SquadExample

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_PRETRAIN = os.path.join(ROOT, "tests", "configs", "tiny_pretrain.py")


# -- run.py ----------------------------------------------------------------------------------------------
def run_command(config, workdir, *overrides):
    """The `python run.py` command line for `config` (a path, optionally with ':arg') and `workdir`."""
    return [sys.executable, os.path.join(ROOT, "run.py"), f"--config={config}", f"--workdir={workdir}", *overrides]


def device_env(devices=1):
    return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def run_py(config, workdir, *overrides, devices=1, check=True, timeout=400):
    """Runs `python run.py` in a subprocess with `devices` CPU devices; asserts success when `check`."""
    result = subprocess.run(
        run_command(config, workdir, *overrides),
        env=device_env(devices),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


TIMINGS = ("tokens_per_sec", "model_tflops_per_sec", "mfu")  # metric fields that measure the machine, not the run


def untimed(row: dict) -> dict:
    """A metrics row without its TIMINGS: what two runs of the same computation must agree on."""
    return {k: v for k, v in row.items() if k not in TIMINGS}


def read_metrics(workdir, split="train"):
    """The rows of `workdir/metrics.jsonl` of one split ('train' or 'eval')."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [r for r in rows if r.get("split", "train") == split]


def kill_after_checkpoint(command, checkpoints, min_step):
    """Starts `command` and SIGKILLs it as soon as the directory `checkpoints` holds a checkpoint of step
    >= `min_step`; returns the newest checkpoint step at that moment."""
    proc = subprocess.Popen(command, env=device_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if os.path.isdir(checkpoints) and any(p.isdigit() and int(p) >= min_step for p in os.listdir(checkpoints)):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    return max(int(p) for p in os.listdir(checkpoints) if p.isdigit())


def free_port():
    """A free TCP port on the loopback interface (for a local multi-process job's coordinator)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- pretraining data ------------------------------------------------------------------------------------
PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4  # PieceTokenizer's special ids


class PieceTokenizer:
    """Duck-typed tokenizer: the text is already whitespace-separated sentencepiece pieces."""

    pad_token_id, unk_token_id, cls_token_id, sep_token_id, mask_token_id = PAD, UNK, CLS, SEP, MASK

    def __init__(self, pieces):
        self.pieces = ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]", *pieces]
        self.vocab = {p: i for i, p in enumerate(self.pieces)}
        self.vocab_size = len(self.pieces)

    def tokenize(self, text):
        return text.split()

    def convert_tokens_to_ids(self, tokens):
        return [self.vocab.get(t, UNK) for t in tokens]

    def pieces_and_ids(self, text):
        pieces = self.tokenize(text)
        return pieces, self.convert_tokens_to_ids(pieces)

    def convert_ids_to_tokens(self, ids):
        return [self.pieces[i] for i in ids]


def synthetic_corpus(num_docs, shape, seed=0, continuation_prob=0.3):
    """Documents of unique pieces "▁t<k>" (word start) / "t<k>" (continuation); k counts up
    through the corpus, so piece id - 5 = position in the corpus token stream. k is spelled with
    the letters a-j for the digits 0-9: a piece holding a digit always starts a word. ``shape`` is
    (sentences per document, pieces per sentence), each an int or a [low, high) range."""
    rng = np.random.default_rng(seed)
    spell = str.maketrans("0123456789", "abcdefghij")

    def draw(spec):
        return int(rng.integers(*spec)) if isinstance(spec, tuple) else spec

    docs, pieces = [], []
    for _ in range(num_docs):
        doc = []
        for _ in range(draw(shape[0])):
            n = draw(shape[1])
            sentence = []
            for j in range(n):
                name = f"t{len(pieces)}".translate(spell)
                piece = name if j and rng.random() < continuation_prob else "▁" + name
                pieces.append(piece)
                sentence.append(piece)
            doc.append(" ".join(sentence))
        docs.append(doc)
    return docs, PieceTokenizer(pieces)


def restore(example):
    """input_ids with the masked positions put back to their labels, cut at the padding."""
    ids = example["input_ids"].copy()
    k = int(example["masked_lm_weights"].sum())
    ids[example["masked_lm_positions"][:k]] = example["masked_lm_ids"][:k]
    return ids[: int(example["attention_mask"].sum())]


def dynamic_data(directory, docs, tok, max_seq_length, max_predictions, seed):
    """A prepared directory of the unmasked pairs of `docs` (dynamic masking) and its loader data."""
    dtype = records.record_dtype(tok.vocab_size, max_seq_length)
    (directory / "examples").mkdir(parents=True)
    pairs = create_pairs(docs, tok, max_seq_length=max_seq_length, seed=1)
    count = prepare._write_records(
        str(directory / "examples" / "train-00000.array_record"),
        (records.encode_pair(a, b, swapped, dtype) for a, b, swapped in pairs),
    )
    manifest = dict(
        masking="dynamic",
        record_dtype=dtype.str,
        max_seq_length=max_seq_length,
        settings={},
        special_ids=special_ids(tok),
        vocab_size=tok.vocab_size,
        shards=[dict(name="train-00000", split="train", examples=count)],
    )
    (directory / prepare.MANIFEST).write_text(json.dumps(manifest))
    data = ml_collections.ConfigDict(
        dict(max_seq_length=max_seq_length, max_predictions_per_seq=max_predictions, masked_lm_prob=0.15, ngram=3)
    )
    return PretrainingDataset(str(directory), "train", data, seed)


def epoch(data, index):
    """Epoch `index` of dynamically masked examples, in stored order."""
    stream = data.examples(shuffle=False)
    return [stream[index * data.size + i] for i in range(data.size)]


VOCAB = 600  # the vocabulary size the tests prepare the tiny config with


def tiny_config(**data):
    """The tiny pretraining config, prepared in shards of 40 documents by one worker; `data` overrides
    config.data."""
    config = experiment.load_config(TINY_PRETRAIN)
    config.data.docs_per_shard = 40
    config.data.prepare_workers = 1
    config.data.update(data)
    return config


# -- GLUE ------------------------------------------------------------------------------------------------
# A field opening with an unbalanced quote: a CSV reader would run it on into the following lines.
QUOTE = '"So he said, and left.'


def _row(*fields):
    return "\t".join(fields)


_MRPC_HEADER = _row("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")
_MRPC_TEST_HEADER = _row("index", "#1 ID", "#2 ID", "#1 String", "#2 String")
_STSB_HEADER = _row(
    "index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"
)
_QQP_HEADER = _row("id", "qid1", "qid2", "question1", "question2", "is_duplicate")
_MNLI_HEAD = (
    "index",
    "promptID",
    "pairID",
    "genre",
    "sentence1_binary_parse",
    "sentence2_binary_parse",
    "sentence1_parse",
    "sentence2_parse",
    "sentence1",
    "sentence2",
)
_PARSES = ("( ( A ) B )", "( C D )", "(ROOT (S (NP A) B))", "(ROOT (S C D))")
_NLI_HEADER = _row("index", "sentence1", "sentence2", "label")
_NLI_TEST_HEADER = _row("index", "sentence1", "sentence2")

# The official download's files (relative path -> lines), each split with a row holding QUOTE.
GLUE_FILES = {
    "CoLA/train.tsv": [
        _row("gj04", "1", "", "Our friends won't buy this analysis, let alone the next one."),
        _row("clc95", "0", "*", QUOTE),
    ],
    "CoLA/dev.tsv": [_row("gj04", "1", "", "The sailors rode the breeze clear of the rocks.")],
    "CoLA/test.tsv": ["index\tsentence", _row("0", QUOTE), _row("1", "Bill whistled past the house.")],
    "SST-2/train.tsv": [
        "sentence\tlabel",
        _row("hide new secretions from the parental units ", "0"),
        _row(QUOTE, "1"),
        _row("contains no wit , only labored gags ", "0"),
    ],
    "SST-2/dev.tsv": ["sentence\tlabel", _row("it 's a charming and often affecting journey . ", "1")],
    "SST-2/test.tsv": ["index\tsentence", _row("0", "uneasy mishmash of styles and genres ."), _row("1", QUOTE)],
    "MRPC/train.tsv": [
        _MRPC_HEADER,
        _row(
            "1",
            "702876",
            "702977",
            'Amrozi accused his brother , whom he called " the witness " , of lying .',
            'Referring to him as only " the witness " , Amrozi accused his brother of lying .',
        ),
        _row("0", "2108705", "2108831", QUOTE, "Yucaipa bought Dominick 's in 1995 for $ 693 million ."),
    ],
    "MRPC/dev.tsv": [_MRPC_HEADER, _row("1", "1355540", "1355592", "He is a doctor .", "He is a physician .")],
    "MRPC/test.tsv": [
        _MRPC_TEST_HEADER,
        _row("0", "1089874", "1089925", QUOTE, "Ms Stewart left ."),
        _row("1", "3019446", "3019327", "Shares rose .", "The stock went up ."),
    ],
    "STS-B/train.tsv": [
        _STSB_HEADER,
        _row(
            "0",
            "main-captions",
            "MSRvid",
            "2012test",
            "0001",
            "none",
            "none",
            "A plane is taking off.",
            "An air plane is taking off.",
            "5.000",
        ),
        _row("1", "main-captions", "MSRvid", "2012test", "0004", "none", "none", QUOTE, "A man left.", "0.500"),
    ],
    "STS-B/dev.tsv": [
        _STSB_HEADER,
        _row(
            "0",
            "main-captions",
            "MSRvid",
            "2012test",
            "0000",
            "none",
            "none",
            "A man is dancing.",
            "A man wearing a hat is dancing.",
            "3.800",
        ),
    ],
    "STS-B/test.tsv": [
        _STSB_HEADER.rsplit("\t", 1)[0],
        _row("0", "main-news", "headlines", "2016", "0001", "none", "none", QUOTE, "Rain falls."),
        _row("1", "main-news", "headlines", "2016", "0002", "none", "none", "Sun.", "Moon."),
    ],
    "QQP/train.tsv": [
        _QQP_HEADER,
        _row("133273", "213221", "213222", "How is the life of a math student?", "Which level is enough?", "0"),
        # A question with a line break in it: two rows of the wrong width, which the original skips.
        _row("363362", "7", "8", "What is"),
        _row("a split question?", "Why?", "1"),
        _row("402555", "536040", "536041", QUOTE, "How do I get a job?", "1"),
    ],
    "QQP/dev.tsv": [_QQP_HEADER, _row("1", "3", "4", "Why is the sky blue?", "What makes the sky blue?", "1")],
    "QQP/test.tsv": ["id\tquestion1\tquestion2", _row("0", QUOTE, "Is it so?"), _row("1", "Why?", "Why not?")],
    "MNLI/train.tsv": [
        _row(*_MNLI_HEAD, "label1", "gold_label"),
        _row(
            "0",
            "31193",
            "31193n",
            "government",
            *_PARSES,
            "Conceptually cream skimming has two dimensions.",
            "Product and geography are what make cream skimming work. ",
            "neutral",
            "neutral",
        ),
        _row("1", "101457", "101457e", "telephone", *_PARSES, QUOTE, "He stayed.", "contradiction", "contradiction"),
    ],
    # label1 differs from gold_label: the reader must take the last column.
    "MNLI/dev_matched.tsv": [
        _row(*_MNLI_HEAD, "label1", "label2", "label3", "label4", "label5", "gold_label"),
        _row(
            "0",
            "63735",
            "63735n",
            "slate",
            *_PARSES,
            "The new rights are nice enough",
            "Everyone really likes the newest benefits ",
            "entailment",
            "neutral",
            "neutral",
            "neutral",
            "contradiction",
            "neutral",
        ),
    ],
    "MNLI/dev_mismatched.tsv": [
        _row(*_MNLI_HEAD, "label1", "label2", "label3", "label4", "label5", "gold_label"),
        _row(
            "0",
            "75290",
            "75290c",
            "letters",
            *_PARSES,
            QUOTE,
            "He left.",
            "entailment",
            "entailment",
            "entailment",
            "neutral",
            "entailment",
            "entailment",
        ),
    ],
    "MNLI/test_matched.tsv": [
        _row(*_MNLI_HEAD),
        _row("0", "31193", "31193c", "government", *_PARSES, QUOTE, "No."),
        _row("1", "31194", "31194c", "slate", *_PARSES, "Yes.", "Maybe."),
    ],
    "MNLI/test_mismatched.tsv": [_row(*_MNLI_HEAD), _row("0", "1", "1n", "letters", *_PARSES, "Hi.", "Bye.")],
    "QNLI/train.tsv": [
        _row("index", "question", "sentence", "label"),
        _row("0", "When did the third Digimon series begin?", QUOTE, "not_entailment"),
        _row("1", "Which missile batteries were deployed?", "Patriot batteries were deployed.", "entailment"),
    ],
    "QNLI/dev.tsv": [
        _row("index", "question", "sentence", "label"),
        _row("0", "What came into force?", "The constitution.", "entailment"),
    ],
    "QNLI/test.tsv": [_row("index", "question", "sentence"), _row("0", "What?", QUOTE)],
    "RTE/train.tsv": [
        _NLI_HEADER,
        _row(
            "0",
            "No Weapons of Mass Destruction Found in Iraq Yet.",
            "Weapons of Mass Destruction Found in Iraq.",
            "not_entailment",
        ),
    ],
    "RTE/dev.tsv": [_NLI_HEADER, _row("0", QUOTE, "He left.", "entailment")],
    "RTE/test.tsv": [_NLI_TEST_HEADER, _row("0", "Mangla was a dam.", QUOTE), _row("1", "A.", "B.")],
    "WNLI/train.tsv": [
        _NLI_HEADER,
        _row("0", "I stuck a pin through a carrot. It had a hole.", "The carrot had a hole.", "1"),
        _row("1", QUOTE, "He left.", "0"),
    ],
    "WNLI/dev.tsv": [_NLI_HEADER, _row("0", "The drain is clogged with hair.", "The hair has to be removed.", "1")],
    "WNLI/test.tsv": [_NLI_TEST_HEADER, _row("0", "Maude and Dora had seen the trains.", "The trains rushed.")],
}


def write_files(root, files):
    """Writes `files` ({relative path: lines}) under `root`; returns `root`."""
    for name, lines in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return root


# -- SQuAD -----------------------------------------------------------------------------------------------
SQUAD_WORDS = (
    "the a of in and to was were is on at by for with from near river city bridge music festival garden "
    "museum painter night morning people story house small large old new green quiet famous north south "
    "east west market station library school window table letter friend winter summer autumn spring "
    "mountain valley island harbour castle tower church village street road train ship teacher student "
    "doctor writer singer dancer farmer baker soldier king queen prince history science theatre concert "
    "picture colour yellow purple orange silver golden wooden stone ancient modern beautiful strange dark "
    "bright cold warm heavy light open closed built opened painted wrote sang visited travelled "
    "remembered discovered believed walked"
).split()
SQUAD_NAMES = ("Café", "Müller", "Paris", "Zoë", "Señor", "naïve")
SQUAD_ANSWER = "Café  Müller, (Paris)"


def squad_sentences(count, seed):
    """`count` sentences of SQUAD_WORDS and SQUAD_NAMES (accents), every third with a name in parentheses."""
    rng = random.Random(seed)
    sentences = []
    for i in range(count):
        sentence = " ".join(rng.choice(SQUAD_WORDS + list(SQUAD_NAMES)) for _ in range(rng.randint(5, 12)))
        sentence = sentence.capitalize() + (f", ({rng.choice(SQUAD_NAMES)})" if i % 3 == 0 else "")
        sentences.append(sentence + rng.choice(".?!"))
    return sentences


def context_ids(tokenizer, text):
    """The ids of `text` without special tokens and their character offsets."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return encoded["input_ids"][0], encoded["offset_mapping"][0]


def long_squad_example(tokenizer):
    """A context of many sentences with SQUAD_ANSWER in the middle; returns it and its answer's token span."""
    before, after = " ".join(squad_sentences(6, seed=1)), " ".join(squad_sentences(6, seed=2))
    context = f"{before} Near the  {SQUAD_ANSWER} was a  café.  {after}"
    start = context.index(SQUAD_ANSWER)
    example = SquadExample("q", "Where was the old painter ?", context, ((SQUAD_ANSWER, start),), False)
    _, offsets = context_ids(tokenizer, context)
    first = int(np.flatnonzero(offsets[:, 0] == start)[0])
    last = int(np.flatnonzero(offsets[:, 1] == start + len(SQUAD_ANSWER))[0])  # the answer ends on token bounds
    return example, first, last


# -- transformers ----------------------------------------------------------------------------------------
def hf_config(**overrides):
    """A small transformers AlbertConfig (eager attention, so that it compares with ours within 1e-5)."""
    base = dict(
        vocab_size=101,
        embedding_size=16,
        hidden_size=32,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=40,
        type_vocab_size=2,
        attn_implementation="eager",
    )
    base.update(overrides)
    return transformers.AlbertConfig(**base)


# -- TensorBoard event files -----------------------------------------------------------------------------
def read_events(path):
    """The Event protos of an event file, read by TensorFlow's own reader (its CRC checks); the callers skip
    without TensorFlow."""
    import tensorflow as tf

    return [tf.compat.v1.Event.FromString(record.numpy()) for record in tf.data.TFRecordDataset(path)]


def event_files(workdir):
    return sorted(glob.glob(os.path.join(workdir, "tensorboard", "*tfevents*")))  # the order TensorBoard reads them in


# -- write errors ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def file_size_limit(nbytes):
    """RLIMIT_FSIZE for this process: a write past `nbytes` of any file fails with EFBIG ("File too large"),
    as a full disk or a quota does; Python ignores the SIGXFSZ that would otherwise kill the process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
