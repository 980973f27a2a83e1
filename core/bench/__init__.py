"""``python -m core bench``: how fast the studio trains, loads data and predicts, as ratios measured in one run.

These machines are shared and noisy, so every target is a ratio of two timings taken back to back in the same
process (routed against both-heads, shared against separate backbones, cached against raw loading, achieved
against a matmul's FLOP/s); absolute figures are printed beside them with the machine they came from. Speed is
never asserted in the tests: the tests only run ``--quick`` as a smoke test.
"""
