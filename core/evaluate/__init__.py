"""Evaluation: metrics as pure functions and small accumulators, the evaluation runner, gallery selection."""
