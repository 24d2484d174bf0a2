"""Training: optimizers, mesh + sharding, checkpoints, metric writers and the one train loop."""
