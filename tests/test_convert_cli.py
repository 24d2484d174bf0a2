"""albert_jax.convert.cli (`python -m albert_jax.convert`): a round trip through both commands is exact, each
output directory holds exactly one model (weights, config and the source's tokenizer), files get ordinary
permissions, and every error is one line on stderr.

References: transformers (its model, tokenizer and fill-mask pipeline read the source and the outputs).
"""

import json
import os
import pydoc_data.topics
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

import albert_jax as aj
from albert_jax import convert
from albert_jax.convert import cli
from albert_jax.tokenizer import AlbertTokenizer, train_spm
from helpers import hf_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER_FILES = {"spiece.model", "tokenizer_config.json", "special_tokens_map.json"}
TEXT = "The function returns a [MASK] of the arguments."


@pytest.fixture(scope="module")
def spm_models(tmp_path_factory):
    """Two SentencePiece models, of 200 and 150 pieces: {vocab size: path}."""
    directory = tmp_path_factory.mktemp("spm")
    docs = "\n".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics))
    return {n: train_spm(iter(docs[:30_000].splitlines()), n, str(directory / f"sp{n}")) for n in (200, 150)}


def hf_dir(path, vocab_size, spm_model=None, seed=0):
    """A random transformers AlbertForMaskedLM saved in `path`, with tokenizer files when `spm_model` is given."""
    torch.manual_seed(seed)
    transformers.AlbertForMaskedLM(hf_config(vocab_size=vocab_size)).save_pretrained(path)
    if spm_model:
        AlbertTokenizer(spm_model).save_pretrained(path)
    return str(path)


def run_cli(*args):
    """`python -m albert_jax.convert *args` in a subprocess -> CompletedProcess (text)."""
    return subprocess.run(
        [sys.executable, "-m", "albert_jax.convert", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


def assert_one_line_error(result, *fragments):
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def fill_mask_reference(model_dir):
    """transformers' fill-mask pipeline on `model_dir`: the top 5 {'token', 'score', ...} for TEXT."""
    return transformers.pipeline("fill-mask", model=model_dir, top_k=5)(TEXT)


def assert_same_predictions(ours, reference):
    assert [p["token"] for p in ours] == [p["token"] for p in reference]
    np.testing.assert_allclose([p["score"] for p in ours], [p["score"] for p in reference], atol=1e-5)


def test_tokenizer_travels_with_the_model_both_ways(tmp_path, spm_models):
    source = hf_dir(tmp_path / "hf", 200, spm_models[200])
    reference = fill_mask_reference(source)
    assert cli.main(["from-hf", "--hf-dir", source, "--out", str(tmp_path / "ours")]) == 0
    assert TOKENIZER_FILES <= set(os.listdir(tmp_path / "ours"))
    assert_same_predictions(aj.pipeline("fill-mask", model=tmp_path / "ours")(TEXT), reference)

    assert cli.main(["to-hf", "--checkpoint", str(tmp_path / "ours"), "--out", str(tmp_path / "hf2")]) == 0
    assert set(os.listdir(tmp_path / "hf2")) == {"config.json", "model.safetensors"} | TOKENIZER_FILES
    assert_same_predictions(aj.pipeline("fill-mask", model=tmp_path / "hf2")(TEXT), reference)
    assert_same_predictions(fill_mask_reference(str(tmp_path / "hf2")), reference)
    theirs = transformers.AutoTokenizer.from_pretrained(source)
    assert transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf2"))(TEXT).input_ids == theirs(TEXT).input_ids


def test_cli_roundtrip(tmp_path):
    model = transformers.AlbertForPreTraining(hf_config()).eval()
    model.save_pretrained(tmp_path / "hf")
    assert cli.main(["from-hf", "--hf-dir", str(tmp_path / "hf"), "--out", str(tmp_path / "ours")]) == 0
    assert cli.main(["to-hf", "--checkpoint", str(tmp_path / "ours"), "--out", str(tmp_path / "hf2")]) == 0
    reloaded = transformers.AlbertForPreTraining.from_pretrained(str(tmp_path / "hf2")).eval()
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)


@pytest.mark.integration
def test_output_holding_a_model_is_refused_unless_overwrite(tmp_path, spm_models):
    """A model and its 200-piece tokenizer are in --out; a 150-piece model without tokenizer must not land
    beside them: refused, then with --overwrite it replaces every model file (other files are kept)."""
    old, new = hf_dir(tmp_path / "old", 200, spm_models[200]), hf_dir(tmp_path / "new", 150, seed=1)
    out = tmp_path / "out"
    assert cli.main(["to-hf", "--checkpoint", old, "--out", str(out)]) == 0
    (out / "NOTES.txt").write_text("mine")
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}

    result = run_cli("to-hf", "--checkpoint", new, "--out", out)
    assert_one_line_error(result, "already holds a model", "spiece.model", "--overwrite")
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before

    assert cli.main(["to-hf", "--checkpoint", new, "--out", str(out), "--overwrite"]) == 0
    assert set(os.listdir(out)) == {"config.json", "model.safetensors", "NOTES.txt"}
    assert transformers.AlbertForMaskedLM.from_pretrained(str(out)).config.vocab_size == 150

    # an albert-jax directory is read before the HF files beside it: its weights must go too
    assert cli.main(["from-hf", "--hf-dir", old, "--out", str(tmp_path / "ours")]) == 0
    assert cli.main(["to-hf", "--checkpoint", new, "--out", str(tmp_path / "ours"), "--overwrite"]) == 0
    assert set(os.listdir(tmp_path / "ours")) == {"config.json", "model.safetensors"}
    assert aj.from_pretrained(str(tmp_path / "ours"))[0].vocab_size == 150


@pytest.mark.integration
def test_to_hf_checks_the_weights_against_config_json(tmp_path):
    config, params = convert.load_hf(hf_dir(tmp_path / "hf", 200))
    aj.save_pretrained(config.replace(vocab_size=201), params, str(tmp_path / "ours"))
    result = run_cli("to-hf", "--checkpoint", tmp_path / "ours", "--out", tmp_path / "out")
    assert_one_line_error(
        result, "albert.embeddings.word_embeddings.weight: checkpoint (200, 16), model expects (201, 16)"
    )
    assert not (tmp_path / "out").exists()
    with pytest.raises(convert.ConversionError, match="word_embeddings.weight: checkpoint"):
        convert.save_hf(config.replace(vocab_size=201), params, str(tmp_path / "direct"))
    assert not (tmp_path / "direct").exists()


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask-022", "umask-027"])
def test_written_files_have_ordinary_permissions(tmp_path, spm_models, umask):
    """Every file of a transformers output has the mode `open()` gives: 0o666 less the umask (safetensors
    alone would leave the weights 0600), and rewriting weights keeps the mode of the file replaced."""
    source = hf_dir(tmp_path / "hf", 200, spm_models[200])
    out = tmp_path / "out"
    previous = os.umask(umask)
    try:
        assert cli.main(["from-hf", "--hf-dir", source, "--out", str(tmp_path / "ours")]) == 0
        assert cli.main(["to-hf", "--checkpoint", str(tmp_path / "ours"), "--out", str(out)]) == 0
        modes = {name: os.stat(out / name).st_mode & 0o777 for name in os.listdir(out)}
        assert modes == dict.fromkeys({"config.json", "model.safetensors"} | TOKENIZER_FILES, 0o666 & ~umask)
        os.chmod(out / "model.safetensors", 0o640)
        convert.save_safetensors({"x": np.zeros(2, np.float32)}, str(out / "model.safetensors"))
        assert os.stat(out / "model.safetensors").st_mode & 0o777 == 0o640
    finally:
        os.umask(previous)


@pytest.mark.integration
def test_help_says_what_to_hf_reads():
    result = run_cli("to-hf", "--help")
    assert result.returncode == 0 and "work dir" not in result.stdout
    assert "albert_jax.safetensors" in result.stdout and "<workdir>/final" in result.stdout


@pytest.mark.parametrize(
    "code",
    [
        "import runpy, sys; sys.argv = ['convert', '--help']; "
        "runpy.run_module('albert_jax.convert', run_name='__main__')",
        # as after an in-process `cli.main(...)`, e.g. from a test or a notebook
        "import albert_jax.convert.cli as c; c.main; import runpy, sys; sys.argv = ['convert', '--help']; "
        "runpy.run_module('albert_jax.convert', run_name='__main__', alter_sys=True)",
    ],
    ids=["python-m", "after-cli.main"],
)
@pytest.mark.integration
def test_no_runpy_warning(code):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0 and "usage: python -m albert_jax.convert" in result.stdout, result.stderr
    assert "RuntimeWarning" not in result.stderr, result.stderr


@pytest.mark.integration
def test_errors_are_one_line(tmp_path):
    source = hf_dir(tmp_path / "hf", 200)
    (tmp_path / "a_file").write_text("")
    assert_one_line_error(
        run_cli("from-hf", "--hf-dir", source, "--out", tmp_path / "a_file"), "a_file exists and is not a directory"
    )
    assert_one_line_error(
        run_cli("to-hf", "--checkpoint", tmp_path / "missing", "--out", tmp_path / "out"), "missing is not a directory"
    )
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"vocab_size": 200}))
    (broken / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    assert_one_line_error(
        run_cli("from-hf", "--hf-dir", broken, "--out", tmp_path / "out"),
        "model.safetensors is not a readable safetensors file",
    )
    (broken / "config.json").write_text("{not json")
    assert_one_line_error(run_cli("to-hf", "--checkpoint", broken, "--out", tmp_path / "out"), "not valid JSON")
    assert not (tmp_path / "out").exists()
