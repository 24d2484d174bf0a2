"""Is example production a bottleneck? Examples/s of `create_examples` vs examples/s the train step
consumes, measured in one process on the demo's settings. Writes experiments/bench/results/data_vs_step.json.

    python -m experiments.bench.data_vs_step [--steps 10]
"""

import argparse
import os
import tempfile
import time

import jax

from albert_jax import experiment
from albert_jax.data.corpus import builtin_corpus
from albert_jax.data.pretraining import create_examples
from albert_jax.training import loop, pretrain

from .machine import ROOT
from .report import write_result


def main():
    parser = argparse.ArgumentParser(
        prog="python -m experiments.bench.data_vs_step", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    config = experiment.load_config(os.path.join(ROOT, "experiments", "configs", "demo.py"))
    config.total_steps, config.log_every, config.eval_every, config.checkpoint_every = args.steps, args.steps, 0, 0
    with tempfile.TemporaryDirectory() as workdir:
        with loop.claim_run(config, workdir, experiment.fingerprint(config, pretrain.FINGERPRINT)) as mesh:
            task, tokenizer = pretrain.build_task(config, experiment.albert_config(config.model), workdir)
            documents = builtin_corpus()
            start = time.perf_counter()
            n = sum(
                1
                for _ in create_examples(
                    documents,
                    tokenizer,
                    max_seq_length=config.data.max_seq_length,
                    max_predictions_per_seq=config.data.max_predictions_per_seq,
                    seed=1,
                )
            )
            examples_per_sec = n / (time.perf_counter() - start)
            loop.train(config, workdir, task, mesh)  # compile + warm-up
        config.total_steps *= 2
        start = time.perf_counter()
        with loop.claim_run(config, workdir, experiment.fingerprint(config, pretrain.FINGERPRINT), overwrite=True):
            loop.train(config, workdir, task, mesh, resume=False)
        step_seconds = (time.perf_counter() - start) / config.total_steps
    consumed = config.batch_size / step_seconds
    result = {
        "device": jax.devices()[0].device_kind,
        "examples": n,
        "examples_per_sec_created": examples_per_sec,
        "train_step_seconds": step_seconds,
        "examples_per_sec_consumed": consumed,
        "headroom": examples_per_sec / consumed,
    }
    write_result("data_vs_step", result)


if __name__ == "__main__":
    main()
