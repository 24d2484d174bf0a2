"""albert-jax against transformers (PyTorch) and Keras-Hub (JAX backend) in one run, on identical configs,
weights and inputs; writes results/results.json and results/results.md (a Markdown table).

    python -m experiments.bench                      # ALBERT-base, batch 8 x 128, float32, CPU
    python -m experiments.bench --quick              # tiny dimensions: checks the harness in a few minutes
    python -m experiments.bench --device gpu --dtype bfloat16 --preset albert-xxlarge-v2 --seq 512
    python -m experiments.bench --only forward,train --repeats 10

Items (--only): peak (matmul peak of XLA and PyTorch, for MFU), forward (a), train (b: MLM over all positions
+ SOP, AdamW), pretrain (c: the original step, MLM at 20 masked positions; transformers computes all positions),
squad (d: QA, seq 384), compile (e: 12/24/48 layers), memory (f: train step at seq 512, a process per system),
pipeline (g: fill-mask and feature-extraction over 1,000 sentences).

The systems take turns call by call: transformers in this process, Keras-Hub and albert-jax in worker processes
(albert-jax set up as run.py sets itself up; --no-reuse-host-memory: at the defaults, in this process). Every
model is loaded from one exported HF directory; backbone outputs must agree within 1e-4 and every training step's
first loss too (float32), or the run stops: equal work must mean equal model.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import sys
import tempfile
import traceback

from . import report, systems
from .machine import environment
from .workloads import FRAMEWORK, ITEMS, SYSTEMS, Settings, workloads

WITHOUT_KERAS = ("albert_jax", "transformers")  # the systems measured where Keras-Hub is not installed
STEP_ITEMS = ("forward", "train", "pretrain", "squad")
LOSS_TOLERANCE = 1e-4  # relative difference of the first loss that still counts as the same computation
BF16_LOSS_TOLERANCE = 2e-2
TITLES = {
    "forward": "a. forward (AlbertModel / backbone outputs), {batch}×{seq}",
    "train": "b. train step: MLM all positions + SOP, AdamW, {batch}×{seq}",
    "pretrain": "c. ALBERT pretraining step: MLM at {positions} masked positions + SOP, {batch}×{seq} "
    "(transformers: full-vocab logits at every position)",
    "squad": "d. SQuAD step (QA head, start/end loss, AdamW), {batch}×{seq}",
    "compile": "e. compile time of the train step, {layers} layers",
    "memory": "f. peak memory of a train step (b), {batch}×{seq}",
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.bench",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--quick", action="store_true", help="tiny dimensions, to check the harness")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="compute dtype (parameters float32): albert-jax config dtype, torch AMP, Keras mixed",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed calls after the warm-up (5; --quick 3)")
    parser.add_argument("--only", default=",".join(ITEMS), help=f"comma-separated subset of {','.join(ITEMS)}")
    parser.add_argument("--preset", default="albert-base-v2", help="an albert_jax.AlbertConfig preset")
    parser.add_argument("--seq", type=int, default=None, help="sequence length of a, b, c, e (128; --quick 32)")
    parser.add_argument("--pipeline-sentences", type=int, default=None, help="sentences of g (1000; --quick 64)")
    parser.add_argument(
        "--pipeline-passes",
        type=int,
        default=1,
        help="timed passes over the sentences of g, after an untimed one (median)",
    )
    parser.add_argument(
        "--no-reuse-host-memory",
        dest="reuse_host_memory",
        action="store_false",
        help="run albert-jax's processes with glibc's and JAX's defaults, not as run.py does",
    )
    parser.add_argument("--out", default=report.RESULTS, help="directory for results.json and results.md")
    args = parser.parse_args(argv)
    args.only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = sorted(set(args.only) - set(ITEMS))
    if unknown:
        parser.error(f"--only: unknown item(s) {unknown}; choose from {list(ITEMS)}")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


# ---------------------------------------------------------------------------------------------------------
# Models and the checks that the systems compute the same thing
# ---------------------------------------------------------------------------------------------------------
def export_checkpoints(s: Settings, work: str, qa: bool) -> dict:
    """{'pretraining', 'qa' (when `qa`)}: HF directories of AlbertForPreTraining and AlbertForQuestionAnswering
    weights from albert_jax.init_params (the QA model shares the pretraining model's encoder)."""
    import jax

    import albert_jax as aj
    from albert_jax import convert

    config = s.albert_config()
    params = aj.init_params(aj.AlbertForPreTraining(config), jax.random.PRNGKey(0))
    dirs = {"pretraining": os.path.join(work, "pretraining")}
    convert.save_hf(config, params, dirs["pretraining"])
    if qa:
        qa_params = aj.init_params(aj.AlbertForQuestionAnswering(config), jax.random.PRNGKey(1))
        qa_params["albert"] = {k: v for k, v in params["albert"].items() if k != "pooler"}
        dirs["qa"] = os.path.join(work, "qa")
        convert.save_hf(config, qa_params, dirs["qa"])
    return dirs


def forward_check(results: dict, s: Settings, dirs: dict, work: str, albert=None) -> tuple[dict, str]:
    """Compares transformers' backbone outputs with albert-jax's into results['checks'] (ModelMismatch above
    1e-4) and saves albert-jax's for the Keras-Hub check. albert-jax's come from its worker `albert` (a
    Server) when it has one, else from a runner in this process. Returns the forward runners built in this
    process (compiled, for the forward measurement) and the path of the saved outputs."""
    import numpy as np

    w = workloads(s)["forward"]
    path = os.path.join(work, "reference.npz")
    runners = {"transformers": systems.make_runner("transformers", w, dirs, s)}
    if albert:
        albert.request(op="outputs", path=path)
        with np.load(path) as saved:
            reference = dict(saved)
    else:
        runners["albert_jax"] = systems.make_runner("albert_jax", w, dirs, s)
        reference = runners["albert_jax"].outputs()
        np.savez(path, **reference)
    diffs = systems.check_outputs("transformers", runners["transformers"].outputs(), reference)
    results["checks"]["transformers backbone outputs vs albert-jax"] = dict(
        max_abs_diff=diffs, attention=runners["transformers"].model.config._attn_implementation
    )
    return runners, path


def keras_check(results: dict, keras: systems.Server, reference: str) -> None:
    """Keras-Hub's backbone outputs against albert-jax's saved ones (ModelMismatch above 1e-4)."""
    reply = keras.request(op="check", reference=reference)
    if "mismatch" in reply:
        raise systems.ModelMismatch(reply["mismatch"])
    results["checks"]["Keras-Hub backbone outputs vs albert-jax"] = reply


def check_losses(results: dict, dtype: str) -> None:
    """ModelMismatch when a system's first-step loss differs from albert-jax's by more than LOSS_TOLERANCE
    (relative; bfloat16 runs: BF16_LOSS_TOLERANCE, rounding differs between the frameworks)."""
    tolerance = LOSS_TOLERANCE if dtype == "float32" else BF16_LOSS_TOLERANCE
    for name, item in results["items"].items():
        ours = item["systems"].get("albert_jax", {}).get("loss")
        if ours is None:
            continue
        for system, record in item["systems"].items():
            if record.get("loss") is not None and abs(record["loss"] - ours) > tolerance * max(1.0, abs(ours)):
                raise systems.ModelMismatch(
                    f"{name}: {system}'s first loss {record['loss']:.6f} differs from albert-jax's {ours:.6f}"
                )


# ---------------------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------------------
def measure_steps(name: str, s: Settings, dirs: dict, servers: dict, runners: dict | None = None) -> dict:
    """Every system on workload `name`, taking turns call by call; `runners`: those already built, `servers`:
    system -> the Server that runs it (the others run in this process)."""
    w = workloads(s)[name]
    records, runners = {}, dict(runners or {})
    for system in SYSTEMS if "keras_hub" in servers else WITHOUT_KERAS:
        if system in runners:
            continue
        try:
            runners[system] = (
                systems.RemoteRunner(servers[system], name)
                if system in servers
                else systems.make_runner(system, w, dirs, s)
            )
        except Exception as e:
            traceback.print_exc()
            records[system] = systems.error(e)
    try:
        timings = systems.interleaved(runners, s.repeats)
        records.update({k: systems.ok(v) for k, v in timings.items()})
    except Exception:  # find out which one fails, keep the others' numbers
        traceback.print_exc()
        for system, runner in runners.items():
            try:
                records[system] = systems.time_alone(runner, s.repeats)
            except Exception as e:
                records[system] = systems.error(e)
    _release(runners)
    return records


def measure_compile(name: str, s: Settings, dirs: dict, keras) -> dict:
    """albert-jax: jit lower + compile of the train step (no call); Keras-Hub: first call - steady call;
    transformers: eager, nothing to compile."""
    from . import jax_steps

    w = workloads(s)[name]
    records = {"transformers": dict(status="n/a", reason="eager PyTorch: nothing is compiled")}
    try:
        records["albert_jax"] = dict(status="ok", **jax_steps.TrainStep(dirs["pretraining"], w, s.dtype).compile())
    except Exception as e:
        traceback.print_exc()
        records["albert_jax"] = systems.error(e)
    if keras:
        runner = None
        try:
            runner = systems.RemoteRunner(keras, name)
            records["keras_hub"] = systems.keras_compile_record(runner, min(s.repeats, 3))
        except Exception as e:
            traceback.print_exc()
            records["keras_hub"] = systems.error(e)
        _release({"keras_hub": runner} if runner else {})
    return records


def _release(runners: dict) -> None:
    for runner in runners.values():
        if isinstance(runner, systems.RemoteRunner):
            try:
                runner.drop()
            except RuntimeError:
                traceback.print_exc()
    runners.clear()
    gc.collect()


def matmul_peaks(s: Settings, before: dict | None = None) -> dict:
    """The XLA and PyTorch matmul peaks (float32, and the run's dtype when it is not float32), each the better
    of this measurement and `before` (the same measured at the start of the run)."""
    from albert_jax.flops import xla_matmul_peak

    from . import flops

    out = {}
    for dtype in dict.fromkeys(("float32", s.dtype)):
        out[f"xla_{dtype}"] = xla_matmul_peak(dtype, s.repeats)
        out[f"pytorch_{dtype}"] = flops.torch_matmul_peak("cuda" if s.device == "gpu" else "cpu", dtype, s.repeats)
    for key, peak in (before or {}).items():
        if peak["flops_per_s"] > out[key]["flops_per_s"]:
            out[key] = peak
    return out


# ---------------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------------
def new_item(name: str, s: Settings) -> dict:
    w = workloads(s).get(name)
    if name.startswith("compile_"):
        kind, title = "compile", TITLES["compile"].format(layers=w.layers)
    else:
        kind = {"memory": "memory"}.get(name, "throughput")
        title = TITLES[name].format(batch=w.batch, seq=w.seq, positions=w.positions)
    return dict(title=title, kind=kind, workload=dataclasses.asdict(w), systems={})


def derive(results: dict, s: Settings) -> None:
    """Tokens/s, model FLOP/s and MFU of every timed step; ratios (other / albert-jax) of every item."""
    from . import flops

    config = s.albert_config()
    peaks = results.get("matmul_peak", {})
    for name, item in results["items"].items():
        if item["kind"] == "throughput":
            w = workloads(s)[name]
            item["model_flops"] = flops.workload_flops(config, w)
            for system, r in item["systems"].items():
                if r.get("status") != "ok":
                    continue
                r["tokens_per_s"] = w.tokens / r["seconds"]
                r["model_flops_per_s"] = item["model_flops"] / r["seconds"]
                peak = peaks.get(f"{FRAMEWORK[system]}_{s.dtype}")
                if peak:
                    r["mfu"] = r["model_flops_per_s"] / peak["flops_per_s"]
        values = {k: r.get("value", r.get("seconds")) for k, r in item["systems"].items() if r.get("status") == "ok"}
        ours = values.get("albert_jax")
        item["ratio"] = {k: v / ours for k, v in values.items() if k != "albert_jax" and ours}


def notes(s: Settings) -> list[str]:
    return (
        [
            "Dropout is 0 in every system; weights come from one HF directory (albert_jax.convert.save_hf of "
            "albert_jax.init_params); inputs are the same integer arrays (workloads.make_inputs).",
            "Training steps: AdamW (lr 1e-4, betas 0.9/0.999, eps 1e-6, weight decay 0.01 except biases and "
            "LayerNorm) after global-norm clipping at 1.0 in all three (optax, torch.optim.AdamW with its default "
            "implementation, keras.optimizers.AdamW; Keras adds epsilon to the un-corrected second moment, its "
            "documented form). The step time includes the optimizer update.",
            "MFU = matmul FLOPs of the model (albert_jax.flops.model_flops; training = 3x forward, no remat "
            "recomputation) / median step time / the matmul peak of the system's own framework (XLA for albert-jax "
            "and Keras-Hub, PyTorch for transformers): the fastest of several 2048³ matmuls, measured at the start "
            "and at the end of the run (the better one). On a busy machine a step can meet a quieter moment than "
            "the peak did.",
            "Keras-Hub has no ALBERT pretraining model: its heads here are Keras-Hub's MaskedLMHead (tied to the "
            "token embedding; 'all positions' = mask_positions 0..T-1) and a Dense SOP classifier on pooled_output; "
            "the SQuAD head is a Dense(2) on sequence_output (its unused pooler stays in the model). It runs with "
            "Keras' predict_on_batch / train_on_batch (jit_compile=True), which also convert the numpy inputs. Its "
            "worker blocks the TensorFlow import Keras-Hub would otherwise make (unused by these models).",
            "Compile (e): albert-jax = jax.jit(step).lower() + .compile() (one scanned layer body); Keras-Hub = first "
            "train_on_batch minus the median of the following calls (its layers are unrolled in the traced graph); "
            "transformers runs eagerly.",
            "Memory (f): each system in a fresh process; CPU: the peak resident set (VmHWM) over 2 steps minus VmRSS "
            "once model, optimizer state and inputs exist (high-water mark reset there), so the first step's "
            "compilation counts for albert-jax and Keras-Hub; 'steady step' is the second step's peak over the "
            "memory it started with; GPU: allocator peak minus its use at the baseline. 'XLA temp' is XLA's own "
            "estimate of the step's scratch buffers.",
            f"Pipelines (g): a model of these dimensions with a {s.pipeline_vocab}-piece SentencePiece vocabulary "
            "trained on the built-in corpus (it cannot support 30k pieces); fill-mask computes MLM logits at the "
            "[MASK] positions in albert-jax and at every position in transformers; each system at its fastest batch "
            f"size of {list(s.pipeline_batch_sizes)} (chosen on the first 128 sentences), then one untimed and "
            f"{s.pipeline_passes} timed pass(es) over all; tokenization included.",
            "The three systems take turns call by call (transformers in this process, Keras-Hub and albert-jax in "
            "worker processes that time each call themselves), so a busy spell of a shared machine hits all of them; "
            "compare ratios of this run only, and see the load average below.",
        ]
        + (
            [
                "Host memory: albert-jax's steps (a-d) and its memory (f) run in worker processes set up as run.py "
                "sets itself up (albert_jax.training.hostmem: glibc keeps freed memory, JAX runs CPU computations "
                "inline, so each step reuses the last one's scratch memory); transformers and Keras-Hub run with "
                "glibc's and their framework's defaults (the setting is process-wide: given to transformers it speeds "
                "its steps up too, its train step by 2-10% in paired runs). --no-reuse-host-memory: albert-jax at the "
                "defaults, in this process."
            ]
            if s.reuse_host_memory
            else []
        )
        + (
            [
                "GPU, float32: XLA's default matmul precision uses TF32 on NVIDIA GPUs from Ampere on (albert-jax and "
                "Keras-Hub), PyTorch's does not (torch.backends.cuda.matmul.allow_tf32 is False): compare bfloat16 "
                "runs for like-for-like arithmetic."
            ]
            if s.device == "gpu" and s.dtype == "float32"
            else []
        )
    )


# ---------------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------------
def measure_models(results: dict, names: list[str], s: Settings, work: str) -> None:
    """Items a-f into `results`: transformers in this process, Keras-Hub in a worker process driven call by
    call, albert-jax in one too when it reuses host memory as run.py does (else in this process), every memory
    measurement in a fresh process."""
    dirs = export_checkpoints(s, work, qa="squad" in names)
    keras_installed = systems.installed("keras_hub")
    keras = systems.Server("keras_hub", s, dirs, work) if keras_installed else None
    albert = systems.Server("albert_jax", s, dirs, work) if s.reuse_host_memory else None
    try:
        forward_runners = None
        if s.dtype == "float32":
            forward_runners, reference = forward_check(results, s, dirs, work, albert)
        if keras and s.dtype == "float32":
            try:
                keras_check(results, keras, reference)
            except RuntimeError as e:  # the worker failed: every Keras-Hub cell says why, the others go on
                traceback.print_exc()
                for name in names:
                    results["items"][name]["systems"]["keras_hub"] = systems.error(e)
                keras.close()
                keras = None
        for name in names:
            records = results["items"][name]["systems"]
            print(f"{name}", file=sys.stderr, flush=True)
            if name in STEP_ITEMS:
                servers = {k: v for k, v in (("keras_hub", keras), ("albert_jax", albert)) if v}
                records.update(measure_steps(name, s, dirs, servers, forward_runners if name == "forward" else None))
                forward_runners = None
            elif name.startswith("compile_"):
                records.update(measure_compile(name, s, dirs, keras))
            elif name == "memory":
                for system in SYSTEMS if keras else WITHOUT_KERAS:
                    records[system] = systems.run_memory(system, s, dirs, work)
        if keras:
            results["meta"]["keras_worker"] = keras.request(op="environment")
        if albert:
            results["meta"]["albert_jax_worker"] = albert.request(op="environment")
    finally:
        for server in (keras, albert):
            if server:
                server.close()
    if not keras_installed:
        for name in names:
            results["items"][name]["systems"]["keras_hub"] = dict(
                status="not installed", reason='pip install -e ".[bench]"'
            )


def measure_pipelines(results: dict, s: Settings, work: str) -> None:
    from . import pipelines_bench

    print("pipelines", file=sys.stderr, flush=True)
    for name, item in pipelines_bench.run(s, os.path.join(work, "pipeline")).items():
        title = f"g. {item['task']} pipeline, {s.pipeline_sentences} sentences, {item['tokens']:,} tokens"
        results["items"][name] = dict(title=title, kind="pipeline", **item)


def run_meta(argv, s: Settings) -> dict:
    """The command, device, settings, model config, environment and thread settings of this run."""
    import jax
    import torch

    command = " ".join(["python -m experiments.bench"] + (sys.argv[1:] if argv is None else list(argv)))
    device = torch.cuda.get_device_name() if s.device == "gpu" else f"CPU ({jax.devices()[0].device_kind})"
    threads = dict(
        torch_num_threads=torch.get_num_threads(),
        torch_num_interop_threads=torch.get_num_interop_threads(),
        xla_flags=os.environ.get("XLA_FLAGS"),
        jax_devices=[str(d) for d in jax.devices()],
    )
    return dict(
        command=command,
        device=device,
        settings=s.to_dict(),
        model=s.albert_config().to_dict(),
        environment=environment(),
        threads=threads,
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    # before jax, torch or keras is imported (workers inherit it)
    os.environ["JAX_PLATFORMS"] = "cuda" if args.device == "gpu" else "cpu"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # A persistent compilation cache (JAX_COMPILATION_CACHE_DIR) would turn the compile-time item (e) into a
    # cache load, for albert-jax and Keras-Hub alike: every compile here is a real one.
    os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    import jax
    import torch

    if args.device == "gpu" and not (torch.cuda.is_available() and jax.devices()[0].platform == "gpu"):
        raise SystemExit(
            "--device gpu needs CUDA in both torch and jax (jax[cuda12]); found torch "
            f"cuda={torch.cuda.is_available()}, jax {jax.devices()[0].platform}"
        )
    s = Settings.for_args(args.preset, args.quick, args.device, args.dtype, args.repeats, args.seq)
    s.pipeline_sentences = args.pipeline_sentences or s.pipeline_sentences
    s.pipeline_passes = args.pipeline_passes
    s.reuse_host_memory = args.reuse_host_memory
    items = [x for x in ITEMS if x in args.only]
    names = [x for x in STEP_ITEMS if x in items]
    names += [f"compile_{n}" for n in s.compile_layers] if "compile" in items else []
    names += ["memory"] if "memory" in items else []
    results = {"meta": run_meta(argv, s), "checks": {}, "items": {n: new_item(n, s) for n in names}, "notes": notes(s)}
    with tempfile.TemporaryDirectory(prefix="albert-bench-") as work:
        if "peak" in items:
            print("matmul peaks", file=sys.stderr, flush=True)
            results["matmul_peak"] = matmul_peaks(s)
        if names:
            measure_models(results, names, s, work)
        if "pipeline" in items:
            measure_pipelines(results, s, work)
        if "peak" in items and (names or "pipeline" in items):  # the machine may have been busier at the start
            results["matmul_peak"] = matmul_peaks(s, results["matmul_peak"])
    results["meta"]["environment_at_end"] = environment()
    derive(results, s)
    try:
        check_losses(results, s.dtype)
    except systems.ModelMismatch as e:  # written for inspection, but the numbers compare different models
        results["mismatch"] = str(e)
        report.write_report(results, args.out)
        raise
    report.write_report(results, args.out)
    failed = [
        f"{n}/{k}" for n, it in results["items"].items() for k, r in it["systems"].items() if r.get("status") == "error"
    ]
    if failed:
        print(f"errors in: {', '.join(failed)} (see results.md)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
