"""Command-line entry points, one module per ``python -m core <command>``.

Each module exposes ``register(subparsers)``, which adds its sub-parser and sets ``func`` to a callable taking
the parsed namespace and returning an exit code. The modules only parse arguments and call the library.
"""

# Order is the order shown in ``python -m core --help``.
COMMAND_MODULES = ["metadata", "synth", "train", "fit_grader", "fit_gate", "gate_threshold", "evaluate", "cv", "predict", "bench"]
