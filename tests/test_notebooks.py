"""The notebooks in notebooks/: committed clean (no outputs, one `parameters` cell, a Colab badge and a
Colab-only install cell), and each runs top to bottom in a fresh kernel with tiny sizes injected after
its parameters cell, as papermill does."""

import json
import os
import re
import sys

import nbclient
import nbformat
import pytest

import helpers

NOTEBOOK_DIR = os.path.join(helpers.ROOT, "notebooks")
COLAB = "https://colab.research.google.com/github/albert-jax/albert-jax/blob/main/notebooks/{}"
KERNEL = "albert-jax-test"

# Per notebook: sizes that run it in under a minute on a 2-core CPU (WORK_DIR is added by the test).
TINY = {
    "01_model_and_conversion.ipynb": dict(
        SPM_SENTENCES=1500, VOCAB_SIZE=300, EMBEDDING_SIZE=16, HIDDEN_SIZE=32, NUM_LAYERS=2, BATCH_SIZE=2, SEQ_LENGTH=8
    ),
    "02_pretrain_and_ablate.ipynb": dict(
        MAX_DOCUMENTS=150,
        VOCAB_SIZE=600,
        SPM_SENTENCES=5000,
        EMBEDDING_SIZE=16,
        HIDDEN_SIZE=32,
        NUM_LAYERS=2,
        SEQ_LENGTH=32,
        BATCH_SIZE=8,
        STEPS=8,
        LOG_EVERY=2,
        EVAL_EVERY=4,
        EVAL_BATCHES=2,
        SWEEP_STEPS=4,
    ),
    "03_finetune.ipynb": dict(
        NUM_TRAIN=400,
        NUM_DEV=100,
        NUM_TEST=20,
        MAX_DOCUMENTS=150,
        VOCAB_SIZE=600,
        HIDDEN_SIZE=32,
        PRETRAIN_STEPS=8,
        PRETRAIN_BATCH_SIZE=8,
        FINETUNE_STEPS=60,
        FINETUNE_BATCH_SIZE=16,
        MAX_SEQ_LENGTH=32,
    ),
}

pytestmark = pytest.mark.integration


def read(name):
    return nbformat.read(os.path.join(NOTEBOOK_DIR, name), as_version=4)


def parameter_cells(nb):
    return [i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", [])]


def test_every_notebook_has_tiny_parameters():
    assert sorted(n for n in os.listdir(NOTEBOOK_DIR) if n.endswith(".ipynb")) == sorted(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_committed_notebook_is_clean_and_colab_ready(name):
    nb = read(name)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name} is committed with outputs"
    title, install = nb.cells[0], nb.cells[1]
    assert title.cell_type == "markdown" and COLAB.format(name) in title.source
    assert install.cell_type == "code" and 'if "google.colab" in sys.modules:' in install.source
    assert "pip install" in install.source and "git+https://github.com/albert-jax/albert-jax" in install.source
    assert parameter_cells(nb) == [2], "exactly one parameters cell, the third"
    assigned = re.findall(r"^([A-Z_]+) = ", nb.cells[2].source, re.M)
    assert "WORK_DIR" in assigned and set(TINY[name]) <= set(assigned), "TINY overrides a name the notebook lacks"


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
    """A kernelspec that runs this interpreter (not whichever `python` is first on PATH, which is what the
    installed `python3` kernelspec runs) with one CPU device: the notebooks' batches need not split over
    the 4 devices conftest forces on the test process. Plots are kept inline even if MPLBACKEND is set."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    env = {
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "albert-jax tests",
                "language": "python",
                "env": env,
            }
        )
    )
    return root


def execute(name, workdir, kernel_dir, monkeypatch):
    """Runs notebook `name` with TINY sizes and WORK_DIR=workdir; returns (notebook, all text output)."""
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_dir))
    nb = read(name)
    index = parameter_cells(nb)[0]
    params = {**TINY[name], "WORK_DIR": str(workdir)}
    injected = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in params.items()))
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(index + 1, injected)
    client = nbclient.NotebookClient(
        nb, kernel_name=KERNEL, timeout=300, resources={"metadata": {"path": str(workdir)}}
    )
    client.execute()
    text = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                text.append(output.text)
            elif "text/plain" in output.get("data", {}):
                text.append(output.data["text/plain"] + "\n")
    return nb, "".join(text)


def images(nb):
    return [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]


def test_model_notebook_counts_parameters_converts_both_ways_and_runs_pipelines(tmp_path, kernel_dir, monkeypatch):
    _, text = execute("01_model_and_conversion.ipynb", tmp_path, kernel_dir, monkeypatch)
    assert re.search(r"albert-base-v2\s+12\s+768\s+128\s+all\s+12M\s+12M", text), text[:2000]
    assert re.search(r"albert-xxlarge-v2 .* 223M\s+235M", text)
    diffs = re.findall(
        r"(transformers -> albert-jax|albert-jax -> transformers): max \|logit difference\| = (\S+)", text
    )
    assert [d for d, _ in diffs] == ["transformers -> albert-jax", "albert-jax -> transformers"]
    assert all(float(value) < 1e-4 for _, value in diffs), diffs
    export = tmp_path / "hf_export"
    assert {"config.json", "model.safetensors", "spiece.model", "tokenizer_config.json"} <= set(os.listdir(export))
    assert "feature-extraction: [batch, tokens, hidden] = (1, " in text and "sentence-order: {'label'" in text


def test_pretrain_notebook_shows_live_metrics_and_the_sweep_table_and_plots(tmp_path, kernel_dir, monkeypatch):
    nb, text = execute("02_pretrain_and_ablate.ipynb", tmp_path, kernel_dir, monkeypatch)
    assert "[train] step 8/8" in text and "[eval] step 8/8" in text  # the live metrics lines
    assert re.search(r"final held-out MLM accuracy [\d.]+ .* SOP accuracy [\d.]+", text)
    for cell in ("all", "none"):
        for seed in (0, 1):
            assert (tmp_path / "sweep" / cell / f"seed{seed}" / "final" / "config.json").exists()
            assert re.search(rf"^{cell}\s+seed {seed}\s+[\d.]+M parameters\s+MLM [\d.]+\s+SOP [\d.]+", text, re.M)
    markdown = [o for c in nb.cells for o in c.get("outputs", []) if "text/markdown" in o.get("data", {})]
    table = markdown[0].data["text/markdown"] if markdown else ""
    assert "| all | 2 |" in table and " ± " in table and "Paired difference from `all`" in table
    assert len(images(nb)) == 3  # the metrics plot, accuracy vs parameters, loss curves


def test_finetune_notebook_learns_the_synthetic_sst2_task_and_predicts(tmp_path, kernel_dir, monkeypatch):
    _, text = execute("03_finetune.ipynb", tmp_path, kernel_dir, monkeypatch)
    accuracies = [float(a) for a in re.findall(r"dev accuracy ([\d.]+) on 100 examples", text)]
    assert len(accuracies) == 2 and accuracies[-1] >= 0.9, text[-3000:]
    assert "glue_submission/SST-2.tsv: 20 predictions" in text and "index\tprediction" in text
    predictions = re.findall(r"^label ([01])  p\(label 1\) = ([\d.]+)  (.*)$", text, re.M)
    assert len(predictions) == 4 and all(0 <= float(p) <= 1 for _, p, _ in predictions)
    assert [label for label, _, _ in predictions[:3]] == ["1", "0", "1"]  # "true", "false", "true"
