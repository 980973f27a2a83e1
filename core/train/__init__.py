"""Training: the loop, run folders (status, logs, checkpoints) and the distributed helpers."""
