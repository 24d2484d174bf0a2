"""Is the pretraining data pipeline flat in memory and fast enough? Prepare (`albert_jax.data.prepare`) and the
grain loader (`albert_jax.data.loader`) on a corpus made from the built-in one, 1x vs 10x, at max_seq_length 512
with dynamic masking: peak RSS of the process trees, examples/s (and per CPU-second) with 0-2 workers, time to
first batch, and cProfiles of both. Writes experiments/bench/results/data_pipeline.json and prints a table with the
targets (README, Performance); `--quick` (1x vs 2x, minutes) prints its results without writing the file.

    python -m experiments.bench.data_pipeline [--quick] [--scale 10] [--repeats 3] [--keep DIR]
"""

import argparse
import cProfile
import importlib.metadata
import json
import os
import pstats
import re
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from albert_jax.data.corpus import builtin_corpus, write_corpus

from .machine import MIB, ROOT, TreeSampler, environment, tree_cpu_seconds
from .report import write_result

CONFIG = "experiments/configs/pretrain.py:size=base"  # the paper config, its source and sizes overridden
DOCS_PER_LONG_DOCUMENT = 20
SEQ, BATCH, SEED = 512, 32, 0
VOCAB_SIZE = 5000  # the most a 10k-sentence sample of the built-in corpus supports is ~5.9k
SPM_SENTENCES = 10_000  # < the 1x corpus' ~12.5k training sentences: the sample is capped in every run
DOCS_PER_SHARD = 16  # long documents per shard: 10 shards at 1x, ~90 at 10x
_PROFILED_PACKAGES = ("albert_jax", "array_record", "sentencepiece")


# ---------------------------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------------------------
def write_copies(directory: str, copies: int) -> dict:
    """Writes copies 0..copies-1 of the long-document corpus as copy-NNN.txt (the original text format); returns
    its size. A long document is a run of DOCS_PER_LONG_DOCUMENT built-in ones, so that pairs of 512 pieces are
    mostly full; copy k > 0 permutes the sentences within each by a generator seeded (SEED, k)."""
    documents = builtin_corpus()
    long = [
        sum(documents[i : i + DOCS_PER_LONG_DOCUMENT], []) for i in range(0, len(documents), DOCS_PER_LONG_DOCUMENT)
    ]
    os.makedirs(directory, exist_ok=True)
    for k in range(copies):
        rng = np.random.default_rng([SEED, k])
        copy = long if k == 0 else [[document[i] for i in rng.permutation(len(document))] for document in long]
        write_corpus(copy, os.path.join(directory, f"copy-{k:03d}.txt"))
    sentences = sum(len(d) for d in long)
    return dict(
        copies=copies,
        documents=copies * len(long),
        sentences=copies * sentences,
        words=copies * sum(len(s.split()) for d in long for s in d),
        bytes=sum(os.path.getsize(os.path.join(directory, n)) for n in os.listdir(directory)),
    )


# ---------------------------------------------------------------------------------------------------------
# A subprocess, its process tree sampled
# ---------------------------------------------------------------------------------------------------------
def run_sampled(command: list[str]) -> tuple[dict, list[tuple[float, str]], str]:
    """Runs `command`, sampling its tree; returns (memory + timing record, timestamped stderr lines, stdout).
    `main_maxrss_mb` is the kernel's peak RSS of the main process (wait4), a check on the 50 ms sampling."""
    lines: list[tuple[float, str]] = []
    load = os.getloadavg()[0]
    start_wall, start = time.time(), time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    reader = threading.Thread(
        target=lambda: lines.extend((time.perf_counter() - start, line.rstrip("\n")) for line in proc.stderr),
        daemon=True,
    )
    reader.start()
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    record = sampler.stop()
    reader.join()
    if proc.returncode:
        sys.exit(f"{' '.join(command)} failed ({proc.returncode}):\n" + "\n".join(line for _, line in lines[-30:]))
    record.update(
        main_maxrss_mb=usage.ru_maxrss * 1024 / MIB,
        seconds=seconds,
        start_wall=start_wall,
        load_1min=[load, os.getloadavg()[0]],
    )
    return record, lines, stdout


# ---------------------------------------------------------------------------------------------------------
# Prepare
# ---------------------------------------------------------------------------------------------------------
def run_prepare(corpus: str, out: str, workers: int) -> dict:
    """`python -m albert_jax.data.prepare` on files:<corpus>/*.txt with `workers` example processes."""
    overrides = dict(
        source=f"files:{corpus}/*.txt",
        max_seq_length=SEQ,
        masking="dynamic",
        dupe_factor=1,
        spm_sentences=SPM_SENTENCES,
        docs_per_shard=DOCS_PER_SHARD,
        prepare_workers=workers,
    )
    command = [
        sys.executable,
        "-m",
        "albert_jax.data.prepare",
        f"--config={CONFIG}",
        f"--out={out}",
        f"--config.model.vocab_size={VOCAB_SIZE}",
        *(f"--config.data.{k}={v}" for k, v in overrides.items()),
    ]
    record, lines, _ = run_sampled(command)
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    progress = [(t, line) for t, line in lines if line.startswith("[prepare]")]
    stamp = {key: next((t for t, line in progress if key in line), None) for key in ("documents into", "done:")}
    rates = [float(m[1]) for _, line in progress if (m := re.search(r"examples \(([\d.]+)/s\)", line))]
    examples = sum(manifest["examples"].values())
    record.update(
        workers=workers,
        examples=manifest["examples"],
        shards=len(manifest["shards"]),
        stream_seconds=stamp["documents into"],
        vocab_and_examples_seconds=stamp["done:"] - stamp["documents into"],
        examples_per_sec=rates[-1],
        examples_per_sec_per_worker=rates[-1] / workers,
        examples_per_tree_cpu_second=examples / record["tree_cpu_seconds"],
    )
    if workers > 1:  # the examples are made in the spawned workers only (their start-up included)
        record["examples_per_worker_cpu_second"] = examples / (record["tree_cpu_seconds"] - record["main_cpu_seconds"])
    return record


# ---------------------------------------------------------------------------------------------------------
# Loader (the child runs this module with --loader)
# ---------------------------------------------------------------------------------------------------------
def data_config():
    """The data section of the pretraining config at SEQ: what the loader reads the prepared directories with."""
    from albert_jax.training.pretrain import default_config

    config = default_config().data
    config.max_seq_length = SEQ
    return config


def loader_child(directory: str, workers: int, batches: int, skip: int) -> None:
    """Iterates `batches` batches; prints one JSON line: first-batch time, steady examples/s (after `skip`
    batches) and the tree's CPU seconds over that window."""
    from albert_jax.data.loader import PretrainingBatches, PretrainingDataset

    config = data_config()
    start = time.perf_counter()
    data = PretrainingDataset(directory, "train", config, SEED)
    iterator = PretrainingBatches(data, BATCH, workers=workers, process_index=0, process_count=1).iterate(0)
    times, cpu = [], {}
    for i in range(batches):
        if i == skip:
            cpu["start"] = tree_cpu_seconds(os.getpid())
        batch = next(iterator)
        times.append(time.perf_counter())
        if i == 0:
            first_wall = time.time()
    cpu["end"] = tree_cpu_seconds(os.getpid())
    iterator.close()
    assert batch["input_ids"].shape == (BATCH, SEQ), batch["input_ids"].shape
    examples = (batches - skip) * BATCH
    window = times[-1] - times[skip - 1]
    print(
        json.dumps(
            dict(
                first_batch_seconds=times[0] - start,
                first_batch_wall=first_wall,
                examples_per_sec=examples / window,
                window_seconds=window,
                examples_per_cpu_second=examples / max(cpu["end"] - cpu["start"], 1e-9),
                train_examples=data.size,
                shards=len(data.manifest["shards"]),
                tokens_per_example=float(batch["attention_mask"].sum(1).mean()),
                predictions_per_example=float(batch["masked_lm_weights"].sum(1).mean()),
            )
        )
    )


def replicate(directory: str, out: str, copies: int) -> str:
    """A prepared directory holding `copies` hard links of each training shard of `directory`: as many shards
    and records as a corpus `copies` times larger, for the loader's memory, without preparing it."""
    with open(os.path.join(directory, "manifest.json")) as f:
        manifest = json.load(f)
    os.makedirs(os.path.join(out, "examples"))
    shards, counts = [], {"train": 0, "eval": 0}
    for shard in manifest["shards"]:
        for _ in range(copies if shard["split"] == "train" else 1):
            name = f"{shard['split']}-{counts[shard['split']]:05d}"
            counts[shard["split"]] += 1
            os.link(
                os.path.join(directory, "examples", shard["name"] + ".array_record"),
                os.path.join(out, "examples", name + ".array_record"),
            )
            shards.append(dict(shard, name=name))
    manifest.update(
        shards=shards,
        examples={split: sum(s["examples"] for s in shards if s["split"] == split) for split in ("train", "eval")},
    )
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return out


def run_loader(directory: str, workers: int, batches: int, skip: int) -> dict:
    command = [
        sys.executable,
        "-m",
        "experiments.bench.data_pipeline",
        "--loader",
        directory,
        "--workers",
        str(workers),
        "--batches",
        str(batches),
        "--skip",
        str(skip),
    ]
    record, _, stdout = run_sampled(command)
    record.update(json.loads(stdout.strip().splitlines()[-1]), workers=workers, batches=batches, skip=skip)
    return record


def profiled(fn, names: tuple[str, ...]) -> dict:
    """cProfile of fn(): seconds, the 12 functions with the most own time, and the cumulative seconds of the
    albert_jax/array_record/sentencepiece functions called one of `names`."""
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.runcall(fn)
    seconds = time.perf_counter() - start
    stats = pstats.Stats(profile).stats

    def name(key):
        path, line, function = key
        return f"{os.path.relpath(path, ROOT) if path.startswith(ROOT) else os.path.basename(path)}:{line}({function})"

    rows = sorted(stats.items(), key=lambda kv: -kv[1][2])[:12]
    return dict(
        seconds=seconds,
        top_tottime=[dict(function=name(k), calls=v[1], tottime=v[2], cumtime=v[3]) for k, v in rows],
        cumtime={
            name(k): v[3] for k, v in stats.items() if k[2] in names and any(m in k[0] for m in _PROFILED_PACKAGES)
        },
    )


def profile_loader(directory: str, batches: int) -> dict:
    """Where the loader's time goes: `batches` batches decoded, masked and batched in this thread."""
    from albert_jax.data.loader import PretrainingDataset

    dataset = PretrainingDataset(directory, "train", data_config(), SEED).examples().batch(BATCH)
    dataset[0]
    out = profiled(
        lambda: [dataset[i] for i in range(1, batches + 1)],
        ("__call__", "decode_pair", "choose_masked_spans", "_word_bounds", "__getitem__"),
    )
    return dict(batches=batches, examples_per_sec_profiled=batches * BATCH / out["seconds"], **out)


def profile_prepare(corpus_file: str, vocab: str, documents: int) -> dict:
    """Where a prepare worker's time goes: `create_pairs` (tokenization + pairing) on the first `documents`
    long documents, as one shard job does (the records' encoding and writing left out)."""
    from albert_jax.data.pretraining import create_pairs
    from albert_jax.data.sources import read_text_files
    from albert_jax.tokenizer import AlbertTokenizer

    tokenizer, docs = AlbertTokenizer(vocab), read_text_files(corpus_file)[:documents]
    pairs = []
    out = profiled(
        lambda: pairs.extend(create_pairs(docs, tokenizer, max_seq_length=SEQ, seed=SEED)),
        ("tokenize", "_preprocess", "_encode_text", "convert_tokens_to_ids", "_segment_pairs", "Encode"),
    )
    return dict(documents=documents, pairs=len(pairs), pairs_per_sec_profiled=len(pairs) / out["seconds"], **out)


# ---------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------
def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def memory_comparison(small: dict, large: dict, scale: int) -> dict:
    """Peak RSS (tree sum and main process) of the 1x and the `scale`x run, and their ratios."""
    return dict(
        **{
            "peak_tree_mb_1x": small["peak_tree_mb"],
            f"peak_tree_mb_{scale}x": large["peak_tree_mb"],
            "peak_main_mb_1x": small["peak_main_mb"],
            f"peak_main_mb_{scale}x": large["peak_main_mb"],
        },
        ratio_tree=ratio(large["peak_tree_mb"], small["peak_tree_mb"]),
        ratio_main=ratio(large["peak_main_mb"], small["peak_main_mb"]),
        delta_tree_mb=large["peak_tree_mb"] - small["peak_tree_mb"],
    )


def run_all(args, work: str) -> dict:
    scale = args.scale
    corpora = {
        1: write_copies(os.path.join(work, "corpus-1x"), 1),
        scale: write_copies(os.path.join(work, f"corpus-{scale}x"), scale),
    }
    corpus = {n: os.path.join(work, f"corpus-{n}x") for n in corpora}
    prepared = {n: os.path.join(work, f"prepared-{n}x") for n in corpora}
    runs = {}

    # ---- prepare: 1x and Nx with 2 workers (memory; the Nx one starts the time-to-first-batch clock) ----
    runs["prepare_1x_w2"] = run_prepare(corpus[1], prepared[1], 2)
    runs[f"prepare_{scale}x_w2"] = run_prepare(corpus[scale], prepared[scale], 2)
    runs[f"loader_{scale}x_w0_r0"] = first = run_loader(prepared[scale], 0, args.batches, args.skip)
    first_batch = first["first_batch_wall"] - runs[f"prepare_{scale}x_w2"]["start_wall"]
    # ---- prepare: 1 worker (in the main process) for throughput, and the main process's memory ----
    for n in corpora:
        runs[f"prepare_{n}x_w1"] = run_prepare(corpus[n], os.path.join(work, f"prepared-{n}x-w1"), 1)

    # ---- loader: memory 1x vs Nx; throughput 0/1/2 workers interleaved over repeats ----
    runs["loader_1x_w0"] = run_loader(prepared[1], 0, args.batches, args.skip)
    runs["loader_replicated_w0"] = replicated = run_loader(
        replicate(prepared[scale], os.path.join(work, "replicated"), args.replicate), 0, args.batches, args.skip
    )
    throughput = {w: [] for w in (0, 1, 2)}
    for repeat in range(args.repeats):
        for w in throughput:
            key = f"loader_{scale}x_w{w}_r{repeat}"
            if key not in runs:
                runs[key] = run_loader(prepared[scale], w, args.batches, args.skip)
            throughput[w].append(runs[key])
    runs["loader_1x_w2"] = run_loader(prepared[1], 2, args.batches, args.skip)
    profile = profile_loader(prepared[scale], args.profile_batches)
    prepare_profile = profile_prepare(
        os.path.join(corpus[1], "copy-000.txt"), os.path.join(prepared[1], "spiece.model"), DOCS_PER_SHARD
    )

    def median(w, field):
        return float(np.median([r[field] for r in throughput[w]]))

    p1, p2 = runs[f"prepare_{scale}x_w1"], runs[f"prepare_{scale}x_w2"]
    return dict(
        corpus={f"{n}x": c for n, c in corpora.items()},
        prepare_memory=dict(
            workers_2=memory_comparison(runs["prepare_1x_w2"], p2, scale),
            workers_1=memory_comparison(runs["prepare_1x_w1"], p1, scale),
            target_ratio=1.2,
        ),
        prepare_throughput=dict(
            corpus=f"{scale}x",
            examples_per_sec_w1=p1["examples_per_sec"],
            examples_per_sec_w2=p2["examples_per_sec"],
            per_worker_w1=p1["examples_per_sec_per_worker"],
            per_worker_w2=p2["examples_per_sec_per_worker"],
            scaling_1_to_2=ratio(p2["examples_per_sec"], p1["examples_per_sec"]),
            examples_per_worker_cpu_second=p2["examples_per_worker_cpu_second"],
            seconds_per_million_words_w2=p2["seconds"] / corpora[scale]["words"] * 1e6,
        ),
        loader_memory=dict(
            workers_0=memory_comparison(runs["loader_1x_w0"], first, scale),
            workers_2=memory_comparison(runs["loader_1x_w2"], throughput[2][0], scale),
            replicated=dict(
                copies=args.replicate,
                shards=replicated["shards"],
                train_examples=replicated["train_examples"],
                peak_main_mb=replicated["peak_main_mb"],
                delta_mb_vs_large=replicated["peak_main_mb"] - first["peak_main_mb"],
                first_batch_seconds=replicated["first_batch_seconds"],
            ),
            batches=args.batches,
        ),
        loader_throughput=dict(
            **{f"examples_per_sec_w{w}": median(w, "examples_per_sec") for w in throughput},
            **{f"examples_per_cpu_second_w{w}": median(w, "examples_per_cpu_second") for w in throughput},
            per_core=median(1, "examples_per_sec"),
            scaling_1_to_2=ratio(median(2, "examples_per_sec"), median(1, "examples_per_sec")),
            repeats=args.repeats,
            target_per_core=125,
            target_scaling=1.7,
        ),
        time_to_first_batch=dict(
            corpus=f"{scale}x",
            seconds=first_batch,
            prepare_seconds=p2["seconds"],
            prepare_stream_seconds=p2["stream_seconds"],
            prepare_vocab_and_examples_seconds=p2["vocab_and_examples_seconds"],
            loader_first_batch_seconds=first["first_batch_seconds"],
            prepare_1x_seconds=runs["prepare_1x_w2"]["seconds"],
        ),
        loader_profile=profile,
        prepare_profile=prepare_profile,
        runs=runs,
    )


def print_table(result: dict, scale: int) -> None:
    pm, lm = result["prepare_memory"], result["loader_memory"]
    pt, lt, ttfb = result["prepare_throughput"], result["loader_throughput"], result["time_to_first_batch"]
    rep = lm["replicated"]
    rows = [
        (
            f"prepare peak RSS tree, 2 workers (1x -> {scale}x)",
            f"{pm['workers_2']['peak_tree_mb_1x']:.0f} -> {pm['workers_2'][f'peak_tree_mb_{scale}x']:.0f} MB",
            f"x{pm['workers_2']['ratio_tree']:.2f} (<= 1.2)",
        ),
        (
            "prepare peak RSS main, 1 worker",
            f"{pm['workers_1']['peak_main_mb_1x']:.0f} -> {pm['workers_1'][f'peak_main_mb_{scale}x']:.0f} MB",
            f"x{pm['workers_1']['ratio_main']:.2f} (<= 1.2)",
        ),
        (
            "prepare examples/s, 1 / 2 workers",
            f"{pt['examples_per_sec_w1']:.0f} / {pt['examples_per_sec_w2']:.0f}",
            f"x{pt['scaling_1_to_2']:.2f}; {pt['examples_per_worker_cpu_second']:.0f} per worker CPU-second",
        ),
        (
            "loader peak RSS, 0 workers",
            f"{lm['workers_0']['peak_main_mb_1x']:.0f} -> {lm['workers_0'][f'peak_main_mb_{scale}x']:.0f} MB",
            f"x{lm['workers_0']['ratio_main']:.2f}",
        ),
        (
            "loader peak RSS tree, 2 workers",
            f"{lm['workers_2']['peak_tree_mb_1x']:.0f} -> {lm['workers_2'][f'peak_tree_mb_{scale}x']:.0f} MB",
            f"x{lm['workers_2']['ratio_tree']:.2f}",
        ),
        (
            f"loader peak RSS, {rep['shards']} shards (links)",
            f"{rep['peak_main_mb']:.0f} MB",
            f"+{rep['delta_mb_vs_large']:.0f} MB vs {scale}x ({rep['train_examples']} examples)",
        ),
        (
            "loader examples/s, 0 / 1 / 2 workers",
            " / ".join(f"{lt[f'examples_per_sec_w{w}']:.0f}" for w in (0, 1, 2)),
            f"1->2 x{lt['scaling_1_to_2']:.2f} (>= 1.7)",
        ),
        (
            "loader examples per CPU-second, 0 / 1 / 2",
            " / ".join(f"{lt[f'examples_per_cpu_second_w{w}']:.0f}" for w in (0, 1, 2)),
            "(>= 125 per core)",
        ),
        (
            f"time to first batch ({scale}x)",
            f"{ttfb['seconds']:.1f} s",
            f"1x prepare {ttfb['prepare_1x_seconds']:.1f} s",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print()
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:<22}  {note}")
    print(f"load average {result['machine']['load_average']} on {result['machine']['cpu']}\n")


def main():
    parser = argparse.ArgumentParser(
        prog="python -m experiments.bench.data_pipeline", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="1x vs 2x, 60 batches, one repeat: checks the harness")
    parser.add_argument("--scale", type=int, default=10, help="copies in the large corpus")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--skip", type=int, default=20, help="batches before the steady-state window")
    parser.add_argument("--repeats", type=int, default=3, help="loader throughput runs per worker count")
    parser.add_argument(
        "--replicate",
        type=int,
        default=68,
        help="hard-linked copies of the large corpus' shards for a loader memory check (68: ~6000 "
        "shards, about the paper config's: ~6.6M Wikipedia articles / 1000 per shard)",
    )
    parser.add_argument("--profile-batches", type=int, default=100)
    parser.add_argument("--keep", help="work in this directory (kept) instead of a temporary one")
    parser.add_argument("--loader", help=argparse.SUPPRESS)  # the child process of run_loader
    parser.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loader:
        return loader_child(args.loader, args.workers, args.batches, args.skip)
    if args.quick:
        args.scale, args.batches, args.skip, args.repeats, args.profile_batches, args.replicate = 2, 60, 10, 1, 30, 10
    start, load = time.time(), os.getloadavg()
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        result = run_all(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="data_pipeline_") as work:
            result = run_all(args, work)
    machine = environment()
    machine["versions"].update({n: importlib.metadata.version(n) for n in ("grain", "array_record")})
    machine.update(
        load_average=[round(x, 2) for x in os.getloadavg()], load_average_at_start=[round(x, 2) for x in load]
    )
    result = dict(
        machine=machine,
        quick=args.quick,
        benchmark_seconds=time.time() - start,
        settings=dict(
            config=CONFIG,
            max_seq_length=SEQ,
            masking="dynamic",
            batch_size=BATCH,
            vocab_size=VOCAB_SIZE,
            spm_sentences=SPM_SENTENCES,
            docs_per_shard=DOCS_PER_SHARD,
            docs_per_long_document=DOCS_PER_LONG_DOCUMENT,
            scale=args.scale,
            batches=args.batches,
            skip=args.skip,
            rss_sample_seconds=0.05,
        ),
        **result,
    )
    if args.quick:  # a harness check: printed, the results file is left alone
        print(json.dumps(result, indent=2))
    else:
        write_result("data_pipeline", result)
    print_table(result, args.scale)


if __name__ == "__main__":
    main()
