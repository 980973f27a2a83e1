"""Plant each bug the test net must catch, one at a time in a scratch copy, and check that the suite fails.

Why a script and not mutmut alone: these are the bugs a review found the suite blind to (issue 22), each a
one-line change that looks plausible in a diff; mutmut's operators do not write most of them (a swapped colour
constant, a reversed channel list, an in-place write). ``make planted`` runs it; it prints one row per bug and
exits 1 if any bug survives. Each bug names the tests expected to catch it, so a run takes a minute or two, not
a whole suite per bug.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Bug:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


BUGS = (
    Bug("CLAHE converts with the BGR constants", "core/data/preprocess.py",
        "lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)", "lab = cv2.cvtColor(rgb, cv2.COLOR_BGR2LAB)",
        ("tests/test_preprocess.py",)),
    Bug("CLAHE converts back with the BGR constant", "core/data/preprocess.py",
        "rgb = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)", "rgb = cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)",
        ("tests/test_preprocess.py",)),
    Bug("alpha compositing dropped when reading RGBA", "core/data/imageio.py",
        "rgb = rgba[:, :, :3] * (rgba[:, :, 3:4] / 255.0)", "rgb = rgba[:, :, :3]",
        ("tests/test_reader.py",)),
    Bug("cache entry written in place instead of atomically", "core/data/cache.py",
        "atomic_write_bytes(entry, _encode(item))",
        "entry.parent.mkdir(parents=True, exist_ok=True); entry.write_bytes(_encode(item))",
        ("tests/test_cache.py",)),
    Bug("pixel AUPR with interpolated (envelope) precision", "core/evaluate/metrics.py",
        "aupr = float(np.sum(np.diff(recall, prepend=0.0) * precision))",
        "aupr = float(np.sum(np.diff(recall, prepend=0.0) * np.maximum.accumulate(precision[::-1])[::-1]))",
        ("tests/test_metrics.py",)),
    Bug("ground-truth lesion channels reversed in the evaluation runner (canvas)", "core/evaluate/runner.py",
        'probs, truth = seg[row], batch["mask"][row].numpy() > 0',
        'probs, truth = seg[row], batch["mask"][row].numpy()[::-1] > 0',
        ("tests/test_evaluate.py",)),
    Bug("ground-truth lesion channels reversed in the evaluation runner (full size)", "core/evaluate/runner.py",
        "    for channel, code in enumerate(LESIONS):\n        path = (sample.masks or {}).get(code)",
        "    for channel, code in enumerate(reversed(LESIONS)):\n        path = (sample.masks or {}).get(code)",
        ("tests/test_evaluate.py",)),
    Bug("best-checkpoint comparison inverted", "core/train/selection.py",
        "return value < best if lower_is_better(metric) else value > best",
        "return value > best if lower_is_better(metric) else value < best",
        ("tests/test_train.py",)),
    Bug("the dataset's ignore label differs from the one the loss and metrics drop", "core/data/dataset.py",
        '"dr": torch.tensor(IGNORE_INDEX if', '"dr": torch.tensor(-1 if',
        ("tests/test_dataset.py", "tests/test_losses.py")),
    Bug("sliding windows blended with equal weights (seams)", "core/infer/tiling.py",
        "weights = blend_weights(win_h, win_w).to(image.device)",
        "weights = torch.ones(win_h, win_w, device=image.device)",
        ("tests/test_infer.py",)),
    Bug("EXIF orientation ignored", "core/data/imageio.py",
        "    image = upright(image)\n    mode = image.mode", "    mode = image.mode",
        ("tests/test_reader.py",)),
)


_TOP_LEVEL_SKIPPED = {".venv", ".git", ".pytest_cache", "data", "mutants"}  # environments, generated data


def _copy_tree(destination: Path) -> None:
    def ignore(folder: str, names: list[str]) -> set[str]:
        skipped = {n for n in names if n == "__pycache__"}
        return skipped | (_TOP_LEVEL_SKIPPED & set(names) if Path(folder) == ROOT else set())

    shutil.copytree(ROOT, destination, ignore=ignore, symlinks=True)


def _plant(copy: Path, bug: Bug) -> None:
    path = copy / bug.file
    text = path.read_text()
    if text.count(bug.old) != 1:
        raise SystemExit(f"{bug.file}: the line to change for {bug.name!r} is no longer there once; update BUGS")
    path.write_text(text.replace(bug.old, bug.new))


def run(python: str, only: str | None) -> int:
    survivors = 0
    print(f"{'bug':<78} {'caught':<8} {'s':>5}  failing tests")
    for bug in BUGS:
        if only and only not in bug.name:
            continue
        with tempfile.TemporaryDirectory(prefix="planted-") as scratch:
            copy = Path(scratch) / "repo"
            _copy_tree(copy)
            _plant(copy, bug)
            started = time.time()
            result = subprocess.run([python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *bug.tests],
                                    cwd=copy, capture_output=True, text=True,
                                    env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
            failed = [line.split(" ")[1] for line in result.stdout.splitlines() if line.startswith("FAILED ")]
            caught = result.returncode != 0 and bool(failed)
            survivors += not caught
            print(f"{bug.name:<78} {'yes' if caught else 'NO':<8} {time.time() - started:5.0f}  "
                  f"{', '.join(failed) or result.stdout.strip().splitlines()[-1:]}", flush=True)
    return 1 if survivors else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter with the requirements installed")
    parser.add_argument("--only", help="run the bugs whose name contains this text")
    args = parser.parse_args()
    sys.exit(run(args.python, args.only))


if __name__ == "__main__":
    main()
