"""Where results go: a benchmark's JSON in results/<name>.json; the main benchmark's results.json and results.md,
one Markdown table (a row per measurement, a column per system, then the ratios), the matmul peaks, the checks
that the systems computed the same model, and the run's environment."""

from __future__ import annotations

import json
import os
import sys

from .workloads import SYSTEMS

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
NAMES = {"albert_jax": "albert-jax", "transformers": "transformers (PyTorch)", "keras_hub": "Keras-Hub (JAX)"}


def _cell(item: dict, record: dict) -> str:
    status = record.get("status")
    if status != "ok":
        reason = record.get("reason")
        return f"{status}" + (f": {reason}" if reason else "")
    kind = item["kind"]
    if kind == "throughput":
        text = f"{record['tokens_per_s']:,.0f} tok/s ({record['seconds'] * 1e3:,.1f} ms)"
        if "mfu" in record:
            text += f", MFU {record['mfu']:.1%}"
        return text
    if kind == "compile":
        text = f"{record['seconds']:.2f} s"
        if "lower_seconds" in record:
            text += f" (lower {record['lower_seconds']:.2f} + compile {record['compile_seconds']:.2f})"
        elif "steady_seconds" in record:
            text += f" (first call {record['first_seconds']:.2f} − step {record['steady_seconds']:.2f})"
        return text
    if kind == "memory":
        text = f"+{record['value']:,.0f} MiB (steady step +{record['steady_increase_mib']:,.0f}"
        if "xla_temp_mib" in record:
            text += f", XLA temp {record['xla_temp_mib']:,.0f}"
        text += ")"
        return text
    if kind == "pipeline":
        return (
            f"{record['sentences_per_s']:,.1f} sent/s, {record['tokens_per_s']:,.0f} tok/s "
            f"(batch {record['batch_size']})"
        )
    raise ValueError(kind)


def _ratio(item: dict, other: str) -> str:
    value = item.get("ratio", {}).get(other)
    return "—" if value is None else f"{value:.2f}×"


def _load(env: dict) -> str:
    return "/".join(f"{x:.1f}" for x in env["load_average"]) if env.get("load_average") else "?"


def _checks(results: dict) -> list[str]:
    """Forward-output differences from albert-jax and every training item's first loss, one line each."""
    lines = []
    for name, check in results.get("checks", {}).items():
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in check["max_abs_diff"].items())
        extra = f" (attention: {check['attention']})" if "attention" in check else ""
        lines.append(f"- {name}: max abs difference {diffs}{extra}")
    if not results.get("checks"):
        lines.append("- forward outputs: not compared (the check runs in float32 only)")
    for name, item in results["items"].items():
        losses = [f"{NAMES[k]} {r['loss']:.6f}" for k, r in item["systems"].items() if r.get("loss") is not None]
        if losses:
            lines.append(f"- first loss, {name}: " + ", ".join(losses))
    if results.get("mismatch"):
        lines.append(f"- **MISMATCH: {results['mismatch']}**")
    return lines


def markdown(results: dict) -> str:
    meta, s = results["meta"], results["meta"]["settings"]
    env = meta["environment"]
    lines = [
        "# albert-jax vs transformers vs Keras-Hub",
        "",
        f"`{meta['command']}` — {env['date']}, {meta['device']}, {s['dtype']}, preset {s['preset']}"
        + (" (--quick: tiny dimensions)" if s["quick"] else "")
        + f", median of {s['repeats']} after a warm-up.",
        "",
        "Ratios are the other system's time (or memory) over albert-jax's, measured in this run: above 1, "
        "albert-jax is faster (or smaller).",
        "",
        "| measurement | " + " | ".join(NAMES[x] for x in SYSTEMS) + " | transformers / albert-jax | "
        "Keras-Hub / albert-jax |",
        "|---|" + "---|" * (len(SYSTEMS) + 2),
    ]
    for item in results["items"].values():
        cells = [_cell(item, item["systems"].get(x, {"status": "not run"})) for x in SYSTEMS]
        lines.append(
            f"| {item['title']} | " + " | ".join(cells) + f" | {_ratio(item, 'transformers')} | "
            f"{_ratio(item, 'keras_hub')} |"
        )
    lines += ["", "## Matmul peak (2048³, fastest call; the denominators of MFU)", ""]
    for framework, peak in results.get("matmul_peak", {}).items():
        lines.append(
            f"- {framework}: {peak['flops_per_s'] / 1e9:,.1f} GFLOP/s ({peak['dtype']}, "
            f"{peak['seconds'] * 1e3:.1f} ms; median {peak['median_seconds'] * 1e3:.1f} ms)"
        )
    lines += ["", "## Same model, same work", ""] + _checks(results)
    lines += ["", "## Notes", ""] + [f"- {note}" for note in results.get("notes", [])]
    lines += [
        "",
        "## Environment",
        "",
        f"- CPU: {env['cpu']} ({env['cpus_usable']} usable of {env['cpu_count']}); load average at the "
        f"start {_load(env)}, at the end {_load(meta.get('environment_at_end', {}))}",
        f"- threads: {meta['threads']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v),
        "- environment variables: " + ", ".join(f"{k}={v}" for k, v in env["env"].items() if v),
        "",
    ]
    return "\n".join(lines)


def write_report(results: dict, out_dir: str) -> None:
    """The main benchmark's `results` as out_dir/results.json and out_dir/results.md."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(markdown(results))
    print(f"wrote {out_dir}/results.json and results.md", file=sys.stderr)


def write_result(name: str, result: dict) -> None:
    """Writes `result` to results/<name>.json and prints it."""
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"{name}.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
