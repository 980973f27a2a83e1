"""``python -m core <command>``: the studio's command line.

Errors a user can fix (``StudioError``) print one line on stderr and exit with status 2; the traceback is kept
for bugs only.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from core.cli import COMMAND_MODULES
from core.errors import StudioError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="idrid-studio" if sys.argv and sys.argv[0].endswith("idrid-studio") else "python -m core",  # pip's script
        description="Gated multi-task IDRiD studio: build metadata, generate synthetic data, train, evaluate, predict.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"core.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except StudioError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
