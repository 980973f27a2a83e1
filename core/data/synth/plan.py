"""What to generate: split sizes, ids and, for the grading half, the target (DR grade, DME risk) of every image.

Targets are chosen before any drawing, from a balanced-ish schedule, so every split shows every grade and every
DME class once it is large enough (five images cover them all); each image then gets lesions that give its target
under the clinical rules, checked after drawing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLITS: tuple[str, ...] = ("train", "test")

# The combinations the rules allow: grades 0 and 1 carry no hard exudates, hence DME 0.
COMBOS: tuple[tuple[int, int], ...] = ((0, 0), (1, 0)) + tuple((g, d) for g in (2, 3, 4) for d in (0, 1, 2))
# Balanced-ish rather than IDRiD's skew (DR 32/5/33/18/12 %): grade 1 and DME 1 are rare in the real set, yet a
# model and its metrics need them.
GRADE_WEIGHTS = (0.22, 0.14, 0.26, 0.19, 0.19)
DME_WEIGHTS_GIVEN_LESIONS = (0.25, 0.30, 0.45)  # for grades 2-4
# Five images covering every grade and every DME class.
COVER: tuple[tuple[int, int], ...] = ((0, 0), (1, 0), (2, 1), (3, 2), (4, 1))


@dataclass(frozen=True)
class ImageSpec:
    """One image to render: ``index`` is its position in its half (train first) and feeds its random stream."""

    half: str
    split: str
    id: str
    index: int
    target: tuple[int, int] | None = None


def split_sizes(n: int, test_fraction: float) -> tuple[int, int]:
    """(train, test); the test split gets at least one image once there are two."""
    test = int(round(n * test_fraction))
    if n >= 2:
        test = min(max(test, 1), n - 1)
    else:
        test = 0
    return n - test, test


def combo_weights() -> np.ndarray:
    weights = []
    for grade, dme in COMBOS:
        w = GRADE_WEIGHTS[grade]
        weights.append(w * (DME_WEIGHTS_GIVEN_LESIONS[dme] if grade >= 2 else 1.0))
    return np.array(weights) / sum(weights)


def target_schedule(n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """``n`` (grade, dme) targets: the covering five first, the rest by largest-remainder quotas, shuffled."""
    chosen = list(COVER[: min(n, len(COVER))])
    rest = n - len(chosen)
    if rest > 0:
        quota = combo_weights() * rest
        counts = np.floor(quota).astype(int)
        for i in np.argsort(-(quota - counts), kind="stable")[: rest - counts.sum()]:
            counts[i] += 1
        for combo, k in zip(COMBOS, counts):
            chosen += [combo] * int(k)
    order = rng.permutation(len(chosen))
    return [chosen[i] for i in order]


def segmentation_id(number: int, total: int) -> str:
    """IDRiD_01 style (two digits) below 100 images, three digits from there, like the real numbering."""
    return f"IDRiD_{number:02d}" if total < 100 else f"IDRiD_{number:03d}"


def grading_id(number: int) -> str:
    return f"IDRiD_{number:03d}"


def plan(n_seg: int, n_cls: int, seed: int) -> list[ImageSpec]:
    """Every image of both halves. Segmentation ids run on from train into test; grading ids restart at 001 in
    each split, as in the real download."""
    specs: list[ImageSpec] = []
    seg_train, _ = split_sizes(n_seg, 1 / 3)
    for i in range(n_seg):
        split = "train" if i < seg_train else "test"
        specs.append(ImageSpec("segmentation", split, segmentation_id(i + 1, n_seg), i))
    cls_train, cls_test = split_sizes(n_cls, 0.2)
    rng = np.random.default_rng([seed, 7])
    index = 0
    for split, n in (("train", cls_train), ("test", cls_test)):
        for number, target in enumerate(target_schedule(n, rng), start=1):
            specs.append(ImageSpec("grading", split, grading_id(number), index, target))
            index += 1
    return specs
