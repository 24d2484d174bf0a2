"""The benchmark: albert-jax against transformers and Keras-Hub (`python -m experiments.bench`), and the data
pipeline's memory and speed (`python -m experiments.bench.data_pipeline`, `python -m experiments.bench.data_vs_step`).
Run from the repository root; results go to experiments/bench/results/."""

# Imports nothing: the worker (experiments.bench.worker) must set KERAS_BACKEND before anything imports keras.
