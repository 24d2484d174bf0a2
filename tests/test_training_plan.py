"""The pre-flight planner: the loop's own step compiled for TPU slices through libtpu's deviceless topologies (the
[tpu] extra) and for this machine's CPU devices."""

import copy
import dataclasses
import json
import os
import subprocess
import sys

import jax
import pytest

from albert_jax import experiment, flops
from albert_jax.training import plan, pretrain, steps
from helpers import ROOT, TINY_PRETRAIN, run_py


def tiny(**fields):
    """The tiny pretraining config (tests/configs/tiny_pretrain.py) with fields set by dotted paths."""
    config = experiment.load_config(TINY_PRETRAIN)
    for path, value in fields.items():
        *parents, leaf = path.split(".")
        holder = config
        for name in parents:
            holder = holder[name]
        holder[leaf] = value
    return config


def planned(config, target, search=False):
    return plan.plan(config, [plan.parse_target(target)], search=search)[0]


WIDE = {"model.hidden_size": 256, "model.intermediate_size": 1024, "model.num_attention_heads": 4, "batch_size": 16}


def test_a_tiny_config_fits_on_v4_8_with_consistent_numbers():
    config = tiny(batch_size=16)
    e = planned(config, "v4-8")
    assert (e["device_kind"], e["num_devices"], e["mesh"]) == ("TPU v4", 4, {"data": 4, "fsdp": 1, "tensor": 1})
    assert e["per_device_batch"] == 16 // 4 and e["fits"]
    memory = e["memory"]
    assert memory["peak"] == memory["arguments"] + memory["outputs"] - memory["aliased"] + memory["temp"]
    assert 0 < memory["peak"] < e["hbm_bytes_per_device"] == flops.accelerator("TPU v4").hbm_bytes
    assert e["compiled_flops_per_step"] > 0 and e["estimated_step_seconds"] > 0 and 0 < e["estimated_mfu"] < 1
    assert e["model_flops_per_step"] == 16 * flops.model_flops(
        experiment.albert_config(config.model), 1, 32, "pretraining", 5, training=True
    )
    # the compiled count covers the model's matmuls (forward + backward), plus element-wise work and recompute
    assert e["model_flops_per_step"] <= e["compiled_flops_per_step"] <= 2 * e["model_flops_per_step"]
    assert e["estimated_total_hours"] == pytest.approx(e["estimated_step_seconds"] * config.total_steps / 3600)
    assert e["time_model"] in ("xla", "roofline")  # libtpu's time where it gives one, else the roofline's
    if e["time_model"] == "roofline":
        chip = flops.accelerator("TPU v4")
        assert e["estimated_step_seconds"] == pytest.approx(
            max(e["compiled_flops_per_step"] / e["num_devices"] / chip.peak_flops, e["estimated_step_seconds"])
        )
    assert e["collectives"]["all-reduce"]["count"] >= 1  # data parallel: the gradients are summed


def test_compiled_flops_follow_the_depth_though_xla_counts_the_scan_body_once():
    """XLA's cost analysis counts a while loop's body once: without the planner's extrapolation the 2- and the
    8-layer models would cost the same."""
    shallow, deep = (planned(tiny(**{"model.num_hidden_layers": n}), "v4-8") for n in (2, 8))
    model_ratio = deep["model_flops_per_step"] / shallow["model_flops_per_step"]
    assert deep["compiled_flops_per_step"] / shallow["compiled_flops_per_step"] == pytest.approx(model_ratio, rel=0.1)
    assert deep["estimated_step_seconds"] > 1.5 * shallow["estimated_step_seconds"]


def test_fsdp_shards_the_arguments_and_gathers_the_parameters():
    data = planned(tiny(**WIDE), "v4-8")
    fsdp = planned(tiny(**WIDE, mesh={"data": 1, "fsdp": 4, "tensor": 1}), "v4-8")
    assert fsdp["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1} and fsdp["per_device_batch"] == 4
    assert 2 * fsdp["memory"]["arguments"] <= data["memory"]["arguments"]
    # parameters gathered for use; gradients summed over the devices (XLA's TPU compiler may reduce-scatter them or
    # all-reduce them and keep each device's slice)
    assert "all-gather" in fsdp["collectives"] and "all-gather" not in data["collectives"]
    assert {"reduce-scatter", "all-reduce"} & set(fsdp["collectives"])


def test_tensor_parallelism_adds_per_layer_all_reduces_and_splits_the_encoder():
    tensor_mesh = {"mesh": {"data": 2, "fsdp": 1, "tensor": 2}}
    data = planned(tiny(**WIDE), "v4-8")
    tensor, deeper = (planned(tiny(**WIDE, **tensor_mesh, **{"model.num_hidden_layers": n}), "v4-8") for n in (2, 4))
    assert tensor["memory"]["arguments"] < data["memory"]["arguments"]
    # Megatron-style: the attention output and the FFN output are all-reduced in every layer's forward and
    # backward pass; two more layers add at least 2 x 2 of them
    added = deeper["collectives"]["all-reduce"]["count"] - tensor["collectives"]["all-reduce"]["count"]
    assert added >= 4
    data_deeper = planned(tiny(**WIDE, **{"model.num_hidden_layers": 4}), "v4-8")
    assert deeper["collectives"]["all-reduce"]["count"] - data_deeper["collectives"]["all-reduce"]["count"] >= 8


def test_xxlarge_at_the_papers_batch_does_not_fit_on_v5e_4(tmp_path):
    config = pretrain.paper_config("xxlarge")
    config.model.dtype = "bfloat16"
    status = plan.run([(None, config)], str(tmp_path), "v5e-4", search=False)
    assert status == plan.NO_FIT_EXIT_STATUS
    (e,) = json.loads((tmp_path / plan.PLAN_JSON).read_text())["targets"]
    assert not e["fits"] and e["memory"]["peak"] > e["hbm_bytes_per_device"] and e["per_device_batch"] == 1024
    assert e["estimated_step_seconds"] is None and "suggestion" not in e
    assert "| v5e-4 | 4 | 4/1/1 | 1024 |" in (tmp_path / plan.PLAN_MD).read_text()


def small_device(target: str, hbm: int) -> plan.Target:
    """`target` with a made-up HBM of `hbm` bytes per device."""
    real = plan.parse_target(target)
    chip = dataclasses.replace(real.accelerator, chip_hbm_bytes=hbm * real.accelerator.devices_per_chip)
    return dataclasses.replace(real, accelerator=chip)


def test_the_search_suggests_the_first_setting_of_the_grid_that_fits():
    config = tiny(**{**WIDE, "batch_size": 256, "model.remat_policy": "none"})
    job = plan.job(config)
    full = plan.plan_target(job, plan.parse_target("v4-8"), search=False)
    # a device just too small for the step as configured: a lighter remat policy is the first thing to try
    target = small_device("v4-8", full["memory"]["peak"] - 1)
    e = plan.plan_target(job, target)
    assert not e["fits"]
    suggestion = e["suggestion"]
    assert suggestion["overrides"] == {"--config.model.remat_policy": "dots_saveable"}
    assert suggestion["memory"]["peak"] <= target.hbm_bytes and suggestion["estimated_step_seconds"] > 0
    # the suggestion, applied, fits
    again = plan.plan_target(job.with_config({"model.remat_policy": "dots_saveable"}), target, search=False)
    assert again["fits"] and again["memory"] == suggestion["memory"]


def test_the_search_says_so_when_nothing_in_the_grid_fits():
    target = small_device("v4-8", 1 << 16)  # 64 KiB: not even the parameters
    e = plan.plan_target(plan.job(tiny(batch_size=16)), target)
    assert e["suggestion"] == {"overrides": None, "reason": e["suggestion"]["reason"]}
    assert e["suggestion"]["reason"].startswith("nothing in the grid fits")


def test_the_planned_step_is_the_one_the_loop_runs(prepared, tmp_path, monkeypatch):
    """The step `loop.train` compiles, with the state and batches it really gets, lowers to the same program as
    the planner's (from the task's example_spec, no data read), on a mesh of this machine's 4 CPU devices."""
    config, directory = prepared
    config = copy.deepcopy(config)
    config.update(dict(total_steps=1, mesh=dict(data=2, fsdp=2, tensor=1)))
    config.data.prepared_dir = directory
    seen = []
    real_train = steps.Step.train

    def spy(step, lr_scale=1.0):
        jitted = real_train(step, lr_scale)

        def record(state, batch):
            seen.append(jitted.lower(state, batch).as_text())
            return jitted(state, batch)

        return record

    monkeypatch.setattr(steps.Step, "train", spy)
    pretrain.run(config, str(tmp_path))
    monkeypatch.setattr(steps.Step, "train", real_train)
    job = plan.job(config)
    mesh = plan._mesh(job, jax.devices())
    step = steps.build_step(config, job.make_task(job.albert_config), mesh)
    planned_text = step.train().lower(step.abstract_state, step.abstract_batch(config.batch_size)).as_text()
    assert seen and seen[0] == planned_text


def test_the_fine_tuning_tasks_describe_their_batches(glue_dir, tiny_pretrained, tmp_path):
    """A fine-tuning task's example_spec is what its batches hold (the planner compiles from it)."""
    from albert_jax.training import finetune, initialization

    config = experiment.load_config(os.path.join(ROOT, "experiments/configs/glue.py:task=stsb,runlocal=True"))
    config.init_from, config.data.glue_dir, config.batch_size = str(tiny_pretrained), str(glue_dir), 2
    task, _, _ = finetune.build_task(config, str(tmp_path), initialization.resolve(config.init_from))
    batch = next(task.train_batches.iterate(0))
    assert {k: (v.shape[1:], str(v.dtype)) for k, v in batch.items()} == {
        k: (tuple(shape), dtype) for k, (shape, dtype) in task.example_spec.items()
    }


@pytest.mark.parametrize(
    "targets,message",
    [
        ("v9-8", r"unknown target 'v9-8': valid forms are v2-N, v3-N, v4-N, v5p-N \(N TensorCores\)"),
        ("v4-8,v3-7", r"target 'v3-7': v3-N counts TensorCores, N = 8, 16, 32"),
        ("v5e-3", r"v5e-N counts chips, N = 1, 2, 4"),
        ("", r"no target given"),
    ],
)
def test_bad_targets_are_one_line_errors_before_any_compile(targets, message, monkeypatch, tmp_path):
    monkeypatch.setattr(plan, "_compile_train", lambda *a: pytest.fail("compiled"))
    with pytest.raises(plan.PlanError, match=message) as raised:
        plan.run([(None, tiny())], str(tmp_path), targets)
    assert "\n" not in str(raised.value) and not os.listdir(tmp_path)


def test_a_mesh_that_does_not_divide_the_devices_is_refused_before_any_compile(monkeypatch, tmp_path):
    monkeypatch.setattr(plan, "_compile_train", lambda *a: pytest.fail("compiled"))
    with pytest.raises(plan.PlanError, match=r"needs 3 devices, 4 are available"):
        plan.run([(None, tiny(mesh={"data": 3, "fsdp": 1, "tensor": 1}))], str(tmp_path), "cpu,v4-8")
    assert not os.listdir(tmp_path)


def test_without_libtpu_a_tpu_target_says_how_to_install_it(monkeypatch):
    real = plan.importlib.util.find_spec
    monkeypatch.setattr(plan.importlib.util, "find_spec", lambda name: None if name == "libtpu" else real(name))
    with pytest.raises(plan.PlanError, match=r'planning for a TPU needs libtpu: pip install -e "\.\[tpu\]"'):
        plan.parse_targets("cpu,v4-8")
    assert [t.name for t in plan.parse_targets("cpu")] == ["cpu"]


@pytest.mark.integration
def test_run_py_plans_without_claiming_the_work_dir_and_exits_3_when_a_target_does_not_fit(tmp_path):
    result = run_py(TINY_PRETRAIN, tmp_path, "--plan=v4-8,cpu", devices=4)
    assert sorted(os.listdir(tmp_path)) == [plan.PLAN_JSON, plan.PLAN_MD]  # no run_config.json, no lock, no data
    entries = json.loads((tmp_path / plan.PLAN_JSON).read_text())["targets"]
    assert [(e["target"], e["num_devices"], e["fits"]) for e in entries] == [("v4-8", 4, True), ("cpu", 4, True)]
    assert entries[1]["time_model"] == "cpu_matmul_peak" and entries[1]["estimated_step_seconds"] > 0
    assert "| v4-8 | 4 | 4/1/1 | 2 |" in result.stdout
    result = run_py(
        TINY_PRETRAIN, tmp_path, "--plan=v5e-1", "--config.batch_size=65536", "--noplan_search", check=False
    )
    assert result.returncode == plan.NO_FIT_EXIT_STATUS and "does not fit: v5e-1" in result.stderr
    result = run_py(TINY_PRETRAIN, tmp_path, "--plan=v3-7", check=False)
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].startswith("error: target 'v3-7'")


@pytest.mark.integration
def test_ablate_py_plans_every_cell(tmp_path):
    sweep = os.path.join(ROOT, "tests", "configs", "tiny_sweep.py")
    command = [sys.executable, os.path.join(ROOT, "experiments", "ablate.py"), f"--config={sweep}"]
    result = subprocess.run(
        [*command, f"--workdir={tmp_path}", "--plan=v5e-4", "--cells=E8-all,E16-none"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    entries = json.loads((tmp_path / plan.PLAN_JSON).read_text())["targets"]
    assert [(e["cell"], e["target"]) for e in entries] == [("E8-all", "v5e-4"), ("E16-none", "v5e-4")]
    # sharing nothing stores a layer's parameters per layer: more argument bytes than sharing all
    assert entries[1]["memory"]["arguments"] > entries[0]["memory"]["arguments"]
    assert "| E16-none | v5e-4 |" in (tmp_path / plan.PLAN_MD).read_text()
