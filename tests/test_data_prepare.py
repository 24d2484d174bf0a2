"""albert_jax.data.prepare, the prepare stage (streamed source -> document shards -> vocabulary -> ArrayRecord
example shards): shards equal `create_examples` of their documents, resuming, refusing other settings, the
original TFRecord format, and the shards' integrity (sizes checked at start, --verify, --repair)."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from albert_jax.data import prepare, records
from albert_jax.data.loader import PretrainingDataset
from albert_jax.data.manifest import FORMAT
from albert_jax.data.pretraining import FEATURES, create_examples, create_pairs
from albert_jax.data.sources import load_source
from albert_jax.tokenizer import AlbertTokenizer
from helpers import ROOT, VOCAB, tiny_config
from test_data_tfrecord import make_instances, write_original_example_files

TINY = os.path.join(ROOT, "tests", "configs", "tiny_pretrain.py")


def shard_documents(config):
    """Shard name -> documents, by the documented split rule (a systematic sample of eval documents, then
    runs of docs_per_shard per split; the eval documents make the eval and the eval_nsp shards)."""
    documents = load_source(config.data.source, max_documents=config.data.max_documents)
    offset = prepare.eval_offset(prepare.data_seed(config))
    splits = {"train": [], "eval": []}
    for i, document in enumerate(documents):
        splits["eval" if prepare.is_eval(i, config.data.eval_fraction, offset) else "train"].append(document)
    splits["eval_nsp"] = splits["eval"]
    per = config.data.docs_per_shard
    return {
        f"{split}-{k // per:05d}": docs[k : k + per] for split, docs in splits.items() for k in range(0, len(docs), per)
    }


# The pairs of each split of a prepared directory, by the config's sentence objective
PAIRS = {"sop": dict(train="sop", eval="sop", eval_nsp="nsp"), "nsp": dict(train="nsp", eval="sop", eval_nsp="nsp")}


def read_records(directory, name):
    from array_record.python.array_record_module import ArrayRecordReader

    reader = ArrayRecordReader(os.path.join(directory, "examples", name + ".array_record"))
    out = reader.read_all()
    reader.close()
    return out


@pytest.mark.parametrize("objective", ["sop", "nsp"])
def test_shards_hold_create_examples_of_their_documents(prepared, prepared_nsp, objective):
    config, directory = prepared if objective == "sop" else prepared_nsp
    manifest = prepare.read_manifest(directory)
    assert manifest["settings"]["sentence_objective"] == objective
    tokenizer = AlbertTokenizer(os.path.join(directory, "spiece.model"))
    expected = shard_documents(config)
    assert [s["name"] for s in manifest["shards"]] == sorted(expected)
    assert len([n for n in expected if n.startswith("train")]) >= 3  # several shards
    dtype = np.dtype(manifest["record_dtype"])
    data = config.data
    for shard in manifest["shards"]:
        split, number = shard["name"].split("-")
        examples = list(
            create_examples(
                expected[shard["name"]],
                tokenizer,
                max_seq_length=data.max_seq_length,
                max_predictions_per_seq=data.max_predictions_per_seq,
                masked_lm_prob=data.masked_lm_prob,
                short_seq_prob=data.short_seq_prob,
                ngram=data.ngram,
                dupe_factor=data.dupe_factor,
                seed=prepare.shard_seed(config.seed, split, int(number)),
                sentence_objective=PAIRS[objective][split],
            )
        )
        stored = [
            records.decode_example(r, dtype, data.max_seq_length, data.max_predictions_per_seq, 0)
            for r in read_records(directory, shard["name"])
        ]
        assert shard["examples"] == len(stored) == len(examples) > 0
        for got, want in zip(stored, examples):
            for key in FEATURES:
                np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert manifest["examples"] == {
        split: sum(s["examples"] for s in manifest["shards"] if s["split"] == split) for split in PAIRS["sop"]
    }
    assert not os.path.exists(os.path.join(directory, "documents"))  # removed once the examples are made


@pytest.fixture(scope="module")
def prepared_nsp(tmp_path_factory):
    """(config, directory) of the tiny config prepared for NSP (static masking)."""
    config = tiny_config(sentence_objective="nsp")
    directory = str(tmp_path_factory.mktemp("prepared_nsp"))
    prepare.prepare(config, directory, VOCAB)
    return config, directory


def test_every_objective_holds_the_same_held_out_sets(prepared, prepared_nsp, tmp_path):
    """The eval (SOP) and eval_nsp (NSP) shards do not depend on the objective trained, so that cells compare on
    the same examples; the train shards are the objective's. A directory prepared for one objective is refused
    for another."""
    (config, sop), (_, nsp) = prepared, prepared_nsp
    names = [s["name"] for s in prepare.read_manifest(sop)["shards"]]
    assert names == [s["name"] for s in prepare.read_manifest(nsp)["shards"]]
    assert {n.split("-")[0] for n in names} == {"train", "eval", "eval_nsp"}
    for name in names:
        same = read_records(sop, name) == read_records(nsp, name)
        assert same == (not name.startswith("train")), name
    with pytest.raises(ValueError) as error:
        prepare.prepare(config, nsp, VOCAB)
    assert str(error.value) == (
        f"{nsp} holds pretraining data prepared with other settings (differs in: sentence_objective); "
        "use --overwrite to prepare it anew, or another directory"
    )
    none = prepare.prepare(tiny_config(sentence_objective="none"), str(tmp_path), VOCAB)
    assert none["settings"]["sentence_objective"] == "none"
    for name in names:  # no sentence loss: trained on SOP pairs
        assert read_records(str(tmp_path), name) == read_records(sop, name), name


def test_the_data_seed_fixes_the_data_whatever_the_training_seed(prepared, tmp_path, monkeypatch):
    """data.seed is the data's seed (config.seed when None): runs with other training seeds read one directory."""
    config, directory = prepared
    made = []
    real = prepare._make_document_shard
    monkeypatch.setattr(prepare, "_make_document_shard", lambda **kwargs: made.append(kwargs) or real(**kwargs))
    other_run = tiny_config(seed=config.seed)
    other_run.seed = config.seed + 5
    assert prepare.prepare(other_run, directory, VOCAB) == prepare.read_manifest(directory) and not made
    other_run.data.seed = None
    with pytest.raises(ValueError, match=r"differs in: seed\)"):
        prepare.prepare(other_run, directory, VOCAB)
    # data.seed k makes the data config.seed = k makes
    moved = tiny_config(seed=config.seed + 5, max_documents=40, docs_per_shard=20)
    same = tiny_config(max_documents=40, docs_per_shard=20)
    same.seed = config.seed + 5
    a, b = prepare.prepare(moved, str(tmp_path / "a"), VOCAB), prepare.prepare(same, str(tmp_path / "b"), VOCAB)
    assert a == b and made
    unmoved = prepare.prepare(tiny_config(max_documents=40, docs_per_shard=20), str(tmp_path / "c"), VOCAB)
    assert unmoved["settings_hash"] != a["settings_hash"]
    assert {s["name"]: s["sha256"] for s in unmoved["shards"]} != {s["name"]: s["sha256"] for s in a["shards"]}


def test_dynamic_shards_hold_the_unmasked_pairs(tmp_path):
    config = tiny_config(masking="dynamic", max_documents=60)
    prepare.prepare(config, str(tmp_path), VOCAB)
    manifest = prepare.read_manifest(str(tmp_path))
    tokenizer = AlbertTokenizer(str(tmp_path / "spiece.model"))
    for split in ("train", "eval", "eval_nsp"):
        name = f"{split}-00000"
        pairs = list(
            create_pairs(
                shard_documents(config)[name],
                tokenizer,
                max_seq_length=config.data.max_seq_length,
                short_seq_prob=config.data.short_seq_prob,
                seed=prepare.shard_seed(config.seed, split, 0),
                sentence_objective=PAIRS["sop"][split],
            )
        )
        stored = [records.decode_pair(r, np.dtype(manifest["record_dtype"])) for r in read_records(str(tmp_path), name)]
        assert stored == pairs and pairs, name


def test_small_corpus_holds_one_document_out(tmp_path):
    config = tiny_config(max_documents=3, eval_fraction=0.02)
    shards = shard_documents(config)
    offset = prepare.eval_offset(config.seed)
    # the systematic rule alone picks no document of 3 at 2%: the last one is then held out
    assert not any(prepare.is_eval(i, 0.02, offset) for i in range(3))
    assert "eval-00000" not in shards
    assert prepare._document_shards(config, str(tmp_path)) == {"train-00000": 2, "eval-00000": 1}


def test_workers_make_the_same_shards(prepared, tmp_path):
    config, directory = prepared
    parallel = tiny_config(prepare_workers=2)
    prepare.prepare(parallel, str(tmp_path), VOCAB)
    assert prepare.read_manifest(str(tmp_path)) == prepare.read_manifest(directory)
    for shard in prepare.read_manifest(directory)["shards"]:
        assert read_records(str(tmp_path), shard["name"]) == read_records(directory, shard["name"])


def test_an_interrupted_prepare_resumes_with_the_missing_shards(prepared, tmp_path, monkeypatch):
    config, directory = prepared
    real, calls = prepare._make_document_shard, []

    def failing_after_two(**kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(kwargs["out"])
        return real(**kwargs)

    monkeypatch.setattr(prepare, "_make_document_shard", failing_after_two)
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare(config, str(tmp_path), VOCAB)
    assert not os.path.exists(tmp_path / prepare.MANIFEST)
    done = set(calls)
    calls.clear()
    monkeypatch.setattr(prepare, "_make_document_shard", lambda **kwargs: calls.append(kwargs["out"]) or real(**kwargs))
    prepare.prepare(config, str(tmp_path), VOCAB)
    shards = prepare.read_manifest(directory)["shards"]
    assert not done & set(calls) and len(done) + len(calls) == len(shards)  # nothing made twice
    assert prepare.read_manifest(str(tmp_path)) == prepare.read_manifest(directory)
    for shard in shards:
        assert read_records(str(tmp_path), shard["name"]) == read_records(directory, shard["name"])


@pytest.mark.integration
def test_other_settings_are_refused_unless_overwrite(prepared, tmp_path):
    _, directory = prepared
    base = [
        sys.executable,
        "-m",
        "albert_jax.data.prepare",
        f"--config={TINY}",
        f"--out={tmp_path}",
        "--config.data.docs_per_shard=40",
        "--config.data.prepare_workers=1",
    ]
    first = subprocess.run(base, capture_output=True, text=True, cwd=ROOT)
    assert first.returncode == 0, first.stderr
    assert (
        json.load(open(tmp_path / prepare.MANIFEST))["settings_hash"]
        == prepare.read_manifest(directory)["settings_hash"]
    )
    changed = subprocess.run(base + ["--config.data.masked_lm_prob=0.2"], capture_output=True, text=True, cwd=ROOT)
    assert changed.returncode != 0
    assert changed.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path} holds pretraining data prepared with other settings (differs in: masked_lm_prob); "
        "use --overwrite to prepare it anew, or another directory"
    )
    config = tiny_config(masked_lm_prob=0.2)  # not the module fixture's config: other tests share it
    manifest = prepare.prepare(config, str(tmp_path), VOCAB, overwrite=True)
    assert manifest["settings"]["masked_lm_prob"] == 0.2
    assert prepare.prepare(config, str(tmp_path), VOCAB) == manifest  # reused as it is


@pytest.mark.integration
def test_a_concurrent_prepare_waits_for_the_first_then_reuses_it(prepared, tmp_path):
    _, directory = prepared
    config = tiny_config()
    out = tmp_path / "data"
    command = [
        sys.executable,
        "-m",
        "albert_jax.data.prepare",
        f"--config={TINY}",
        f"--out={out}",
        "--config.data.docs_per_shard=40",
        "--config.data.prepare_workers=1",
    ]
    with prepare._exclusive(str(out)):  # another prepare of the directory holds it
        second = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        for line in second.stderr:
            if "waiting for another prepare" in line:
                break
        else:
            pytest.fail(f"the second prepare did not wait: exit {second.wait()}")
        assert second.poll() is None and not out.exists()
        manifest = prepare.prepare(config, str(out), VOCAB)
    rest = second.stderr.read()
    assert second.wait() == 0, rest
    assert "done:" not in rest and "shard" not in rest, rest  # it made nothing: it reused the first one's data
    assert prepare.read_manifest(str(out)) == manifest == prepare.read_manifest(directory)


def test_original_tfrecords_train(tmp_path, prepared):
    """Files in google-research/albert's layout are converted as they are and pretrain a model."""
    from albert_jax.training import pretrain

    _, directory = prepared
    instances, piece_tokenizer = make_instances(60, max_seq_length=32, max_predictions_per_seq=3)
    assert piece_tokenizer.vocab_size <= VOCAB
    files = [str(tmp_path / f"part-{i}.tfrecord") for i in range(2)]
    write_original_example_files(instances, piece_tokenizer, 32, 3, files)
    config = tiny_config(
        source=f"tfrecord:{tmp_path}/part-*.tfrecord",
        vocab_file=os.path.join(directory, "spiece.model"),
        eval_fraction=0.1,
        max_predictions_per_seq=3,
    )
    config.total_steps = 6
    pretrain.run(config, str(tmp_path / "run"))
    manifest = prepare.read_manifest(str(tmp_path / "run" / "data"))
    assert manifest["examples"] == dict(train=manifest["examples"]["train"], eval=60 - manifest["examples"]["train"])
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    train = [r for r in rows if r.get("split", "train") == "train"]
    assert len(train) == 6 and all(np.isfinite(r["loss"]) for r in train)
    evals = [r for r in rows if r.get("split") == "eval"]
    # no documents, so no NSP pairs: evaluated on the files' SOP examples only
    assert evals and all("sop_accuracy" in r and not any(k.startswith("nsp") for k in r) for r in evals)
    data = PretrainingDataset(str(tmp_path / "run" / "data"), "train", config.data, config.seed)
    stored = {tuple(data.examples(shuffle=False)[i]["input_ids"]) for i in range(data.size)}
    written = {tuple(piece_tokenizer.convert_tokens_to_ids(i.tokens) + [0] * (32 - len(i.tokens))) for i in instances}
    assert stored <= written and len(stored) == data.size


@pytest.mark.parametrize(
    "data, message",
    [
        (dict(source="tfrecord:{tmp}/*.tfrecord"), "masking='static' and config.data.vocab_file"),
        (dict(masking="per-epoch"), "config.data.masking must be 'static' or 'dynamic', got 'per-epoch'"),
        (
            dict(source="tfrecord:{tmp}/*.tfrecord", vocab_file="{tmp}/spiece.model", sentence_objective="nsp"),
            "sentence-order examples: .* config.data.sentence_objective 'sop' or 'none'",
        ),
        (
            dict(sentence_objective="mlm"),
            re.escape("config.data.sentence_objective must be one of ('sop', 'nsp', 'none'), got 'mlm'"),
        ),
    ],
)
def test_unpreparable_settings_are_refused_before_anything_is_written(tmp_path, data, message):
    config = tiny_config(**{k: v.format(tmp=tmp_path) for k, v in data.items()})
    with pytest.raises(ValueError, match=message):
        prepare.prepare(config, str(tmp_path / "out"), VOCAB)
    assert not (tmp_path / "out").exists()


def test_a_corpus_without_two_sentence_documents_is_named(tmp_path, prepared):
    _, directory = prepared
    (tmp_path / "corpus.txt").write_text("".join(f"Sentence number {i} stands alone.\n\n" for i in range(20)))
    config = tiny_config(
        source=f"files:{tmp_path}/corpus.txt", vocab_file=os.path.join(directory, "spiece.model"), max_documents=None
    )
    with pytest.raises(
        ValueError,
        match=r"No train pretraining example can be made from files:.*corpus\.txt: .* "
        r"at least two \(non-empty\) sentences",
    ):
        prepare.prepare(config, str(tmp_path / "out"), VOCAB)


# -- integrity -------------------------------------------------------------------------------------------
def damaged_copy(directory, out, flip=(), truncate=()):
    """A copy of the prepared `directory` in `out` (the shared fixture stays intact) with one bit flipped in each
    shard named in `flip` (inside its first chunk) and each shard named in `truncate` cut to 3/4 of its size."""
    shutil.copytree(directory, out)
    for name in flip:
        with open(shard_path(out, name), "r+b") as f:
            f.seek(5000)
            byte = f.read(1)[0]
            f.seek(5000)
            f.write(bytes([byte ^ 0x10]))
    for name in truncate:
        os.truncate(shard_path(out, name), os.path.getsize(shard_path(out, name)) * 3 // 4)
    return str(out)


def shard_path(directory, name):
    return os.path.join(directory, "examples", name + ".array_record")


def repair_command(directory):
    return f"python -m albert_jax.data.prepare --config=<the config it was prepared with> --out={directory} --repair"


@pytest.mark.integration
def test_verify_names_each_damaged_shard(prepared, tmp_path):
    _, directory = prepared
    verify = [sys.executable, "-m", "albert_jax.data.prepare", "--verify"]
    intact = subprocess.run([*verify, directory], capture_output=True, text=True, cwd=ROOT)
    assert intact.returncode == 0, intact.stderr
    shards = prepare.read_manifest(directory)["shards"]
    assert len(shards) == 6  # train-0000[0-3], eval-00000, eval_nsp-00000
    mib = sum(os.path.getsize(shard_path(directory, s["name"])) for s in shards) / 2**20
    assert intact.stdout.splitlines() == [
        f"{directory}: all 6 shards intact ({mib:.1f} MiB, sizes and sha256 as in the manifest)"
    ]
    damaged = damaged_copy(directory, tmp_path / "data", flip=["train-00001"], truncate=["train-00002"])
    size = os.path.getsize(shard_path(directory, "train-00002"))
    result = subprocess.run([*verify, damaged], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{shard_path(damaged, 'train-00001')}: its sha256 is not the manifest's: its bytes changed",
        f"{shard_path(damaged, 'train-00002')}: {size * 3 // 4} bytes, the manifest records {size}",
    ]
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: 2 of 6 shards of {damaged} are damaged; make them again: {repair_command(damaged)}"
    )


def test_a_run_with_a_truncated_shard_stops_before_training(prepared, tmp_path):
    from albert_jax.training import pretrain

    _, directory = prepared
    damaged = damaged_copy(directory, tmp_path / "data", truncate=["train-00002"])
    size = os.path.getsize(shard_path(directory, "train-00002"))
    with pytest.raises(ValueError) as error:
        pretrain.run(tiny_config(prepared_dir=damaged), str(tmp_path / "run"))
    assert str(error.value) == (
        f"{shard_path(damaged, 'train-00002')} is damaged ({size * 3 // 4} bytes, the manifest records {size}); "
        f"make it again: {repair_command(damaged)}"
    )
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_repair_makes_the_damaged_shards_again_identical_to_the_originals(prepared, tmp_path, monkeypatch):
    config, directory = prepared
    damaged = damaged_copy(
        directory, tmp_path / "data", flip=["train-00001"], truncate=["eval-00000", "eval_nsp-00000"]
    )
    real, made = prepare._make_document_shard, []
    monkeypatch.setattr(
        prepare, "_make_document_shard", lambda **kwargs: made.append(os.path.basename(kwargs["out"])) or real(**kwargs)
    )
    manifest = prepare.prepare(config, damaged, VOCAB, repair=True)
    assert sorted(made) == [  # only the damaged ones
        "eval-00000.array_record",
        "eval_nsp-00000.array_record",
        "train-00001.array_record",
    ]
    assert manifest == prepare.read_manifest(damaged) == prepare.read_manifest(directory)
    for shard in manifest["shards"]:
        with open(shard_path(damaged, shard["name"]), "rb") as a, open(shard_path(directory, shard["name"]), "rb") as b:
            assert a.read() == b.read(), shard["name"]
    assert sorted(os.listdir(damaged)) == sorted(os.listdir(directory))  # no documents/ or vocabulary sample left
    made.clear()
    assert prepare.prepare(config, damaged, VOCAB, repair=True) == manifest and not made  # intact: nothing to do


def test_data_of_an_older_version_is_refused(prepared, tmp_path):
    config, directory = prepared
    old = damaged_copy(directory, tmp_path / "data")
    for name in (prepare.SETTINGS, prepare.MANIFEST):
        values = json.load(open(os.path.join(old, name)))
        (values if name == prepare.SETTINGS else values["settings"])["format"] = 1
        json.dump(values, open(os.path.join(old, name), "w"))
    message = (
        f"{old} was prepared by another version of albert-jax (format 1, this one reads {FORMAT}); "
        "prepare again (--overwrite)"
    )
    with pytest.raises(ValueError) as error:
        prepare.prepare(config, old, VOCAB)
    assert str(error.value) == message
    with pytest.raises(ValueError) as error:
        prepare.verify(old)
    assert str(error.value) == message
