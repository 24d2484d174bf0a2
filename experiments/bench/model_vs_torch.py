"""albert-jax vs transformers (PyTorch): time per forward and per forward+backward of AlbertForPreTraining
with the same weights and inputs, measured in one process, reported as ratios (torch time / our time;
> 1 means albert-jax is faster). Writes experiments/bench/results/model_vs_torch.json.

    python experiments/bench/model_vs_torch.py [--preset albert-base-v2] [--batch 8] [--length 128]
"""

import argparse
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers
from common import write_result

import albert_jax as aj
from albert_jax import convert


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (compiles our step)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="albert-base-v2")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    config = aj.AlbertConfig.from_preset(args.preset)
    model = aj.AlbertForPreTraining(config)
    params = aj.init_params(model, jax.random.PRNGKey(0))
    with tempfile.TemporaryDirectory() as tmp:
        convert.save_hf(config, params, tmp)
        torch_model = transformers.AlbertForPreTraining.from_pretrained(tmp)
    ids = np.random.RandomState(0).randint(5, config.vocab_size, (args.batch, args.length))
    ids_jax, ids_torch = jnp.asarray(ids), torch.tensor(ids)

    forward = jax.jit(lambda p, x: model.apply({"params": p}, x).prediction_logits)
    grad = jax.jit(jax.grad(lambda p, x: model.apply({"params": p}, x).prediction_logits.mean()))

    def torch_forward():
        with torch.no_grad():
            torch_model(input_ids=ids_torch)

    def torch_grad():
        torch_model.zero_grad()
        torch_model(input_ids=ids_torch).prediction_logits.mean().backward()

    torch_model.eval()
    results = {
        "preset": args.preset, "batch": args.batch, "length": args.length, "device": jax.devices()[0].device_kind,
        "torch_threads": torch.get_num_threads(),
        "forward_seconds": {"albert_jax": median_seconds(lambda: forward(params, ids_jax).block_until_ready(),
                                                         args.repeats),
                            "transformers": median_seconds(torch_forward, args.repeats)},
        "forward_backward_seconds": {
            "albert_jax": median_seconds(lambda: jax.block_until_ready(grad(params, ids_jax)), args.repeats),
            "transformers": median_seconds(torch_grad, args.repeats)},
    }
    for key in ("forward_seconds", "forward_backward_seconds"):
        results[key]["speedup"] = results[key]["transformers"] / results[key]["albert_jax"]
    write_result("model_vs_torch", results)


if __name__ == "__main__":
    main()
