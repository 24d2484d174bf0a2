"""Experiments on albert-jax from a checkout: configs (`file.py:arg`), the ablation sweep and the benchmark
(`python -m experiments.bench`, run from the repository root)."""
