"""``python -m core metadata``: read an IDRiD download and write the balanced metadata JSON."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from core.vocabulary import LESIONS, NUM_DME_RISKS, NUM_DR_GRADES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "metadata",
        help="read an IDRiD download and write balanced_idrid_metadata.json",
        description="Read an IDRiD download (official layout; a doubled top folder, either half absent and one "
                    "root per half are fine) and write the balanced metadata JSON with train/val/test splits.",
    )
    parser.add_argument("--root", type=Path, action="append", required=True,
                        help="dataset root; repeat it when the halves were unpacked into separate folders")
    parser.add_argument("--out", type=Path, default=Path("balanced_idrid_metadata.json"),
                        help="where to write the JSON (default: %(default)s)")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="share of each official training half kept for validation (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation split (default: %(default)s)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--strict", dest="strict", action="store_true", default=False,
                      help="stop at the first bad sample")
    mode.add_argument("--lenient", dest="strict", action="store_false",
                      help="skip bad samples with a warning listing them (the default)")
    parser.add_argument("--drop-conflicting", action="store_true",
                        help="leave out copies of one photograph whose grades disagree (IDRiD's grading half has three "
                             "such pairs); by default they are kept, apart but in one split, and listed")
    parser.add_argument("--verify", action="store_true",
                        help="decode every image and mask fully (slow on full-size images; catches corrupt pixels)")
    parser.set_defaults(func=run)


def format_summary(summary: dict) -> str:
    grades = "DR " + "/".join(map(str, range(NUM_DR_GRADES)))
    risks = "DME " + "/".join(map(str, range(NUM_DME_RISKS)))
    lines = [f"{'split':<6} {'seg':>5} {'cls':>5} {'both':>5}  {'masks ' + '/'.join(LESIONS):<24} {grades:<21} {risks}"]
    for split in ("train", "val", "test"):
        part = summary[split]
        masks = "/".join(str(v) for v in part["masks"].values())
        dr = "/".join(str(v) for v in part["dr_grade"].values())
        dme = "/".join(str(v) for v in part["dme_risk"].values())
        lines.append(f"{split:<6} {part['segmentation']:>5} {part['classification']:>5} {part.get('both', 0):>5}  "
                     f"{masks:<24} {dr:<21} {dme}")
    lines.append("(seg: samples with masks, cls: with grades, both: one photograph with masks and grades)")
    same = summary.get("same_photograph") or {}
    if same.get("twins"):
        lines.append(f"{same['twins']} photograph(s) found in both halves: one sample each, with masks and grades")
    for group in same.get("duplicates", []):
        labels = ", ".join(f"{key} DR {v['dr_grade']} DME {v['dme_risk']}" for key, v in group["labels"].items())
        state = "labels disagree" if group["conflicting"] else "labels agree"
        lines.append(f"same photograph: {labels} ({state}: {group['outcome']})")
    if summary.get("labels_without_images"):
        rows = ", ".join(f"{k} {v}" for k, v in summary["labels_without_images"].items())
        lines.append(f"grading labels without an images folder (not used): {rows}")
    if summary.get("skipped"):
        lines.append(f"skipped {len(summary['skipped'])} bad sample(s):")
        lines += [f"  {s}" for s in summary["skipped"]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from core.data.idrid import read_idrid
    from core.data.metadata import build_metadata, write_metadata

    logging.basicConfig(level=logging.ERROR)  # the summary lists skipped samples; no duplicate warning
    index = read_idrid(args.root, strict=args.strict, verify=args.verify)
    document = build_metadata(index, val_fraction=args.val_fraction, seed=args.seed,
                              drop_conflicting=args.drop_conflicting, progress=True)
    write_metadata(document, args.out)
    print(format_summary(document["summary"]))
    print(f"wrote {args.out}")
    return 0
