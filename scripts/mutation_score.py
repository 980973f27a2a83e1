"""Print the mutation score per module from mutmut's results (``make mutation`` runs it after ``mutmut run``).

mutmut 3 prints totals only; the note and the README want the score of each module, so this reads the
per-module result files mutmut leaves in ``mutants/`` (``*.meta``: mutant name -> exit code of its tests).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from mutmut.stats import status_by_exit_code  # mutmut's own reading of a mutant's exit code


def _verdict(code: int | None) -> str:
    status = status_by_exit_code[code]
    return {"segfault": "killed", "suspicious": "timeout"}.get(status, status)


def main() -> int:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "mutants"  # or a saved copy of mutmut's results
    metas = sorted(folder.rglob("*.py.meta"))
    if not metas:
        print("no mutmut results under mutants/: run `make mutation` first", file=sys.stderr)
        return 2
    print(f"{'module':<28} {'mutants':>7} {'checked':>7} {'killed':>7} {'timeout':>7} {'survived':>8} {'no tests':>8} "
          f"{'score':>6}")
    total: Counter[str] = Counter()
    for meta in metas:
        data = json.loads(meta.read_text())
        counts = Counter(_verdict(code) for code in data.get("exit_code_by_key", {}).values())
        total.update(counts)
        module = str(meta.relative_to(folder)).removesuffix(".meta")
        print(_row(module, counts))
    print(_row("all", total))
    return 0


def _row(name: str, counts: Counter[str]) -> str:
    judged = counts["killed"] + counts["timeout"] + counts["survived"] + counts["no tests"]  # a mutant no test
    # reaches counts against the score: code no test runs is code a bug can hide in
    score = (counts["killed"] + counts["timeout"]) / judged if judged else float("nan")
    return (f"{name:<28} {sum(counts.values()):>7} {judged:>7} {counts['killed']:>7} {counts['timeout']:>7} "
            f"{counts['survived']:>8} {counts['no tests']:>8} {score:>6.1%}")


if __name__ == "__main__":
    sys.exit(main())
