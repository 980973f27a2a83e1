"""Helpers for the app tests: a copy of the shipped demo run as a fresh clone has it, and awkward upload files."""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from streamlit.testing.v1 import AppTest

from builders import fundus

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "checkpoints" / "demo"
DEMO_FILES = ("config.yaml", "status.json", "history.jsonl", "log.jsonl", "train.log")


def copy_demo(root: Path, synthetic: Path | None = None, name: str = "demo", **synth) -> Path:
    """The demo run's tracked files (no eval, no metadata.json) under ``root/name``.

    With ``synthetic``, its config points at a small synthetic dataset of its own there (generated in about a
    second by first start) instead of the project's data/synthetic; the weights do not depend on the data.
    """
    folder = root / name
    (folder / "weights").mkdir(parents=True)
    for file in DEMO_FILES:
        shutil.copy(DEMO / file, folder / file)
    for weights in (DEMO / "weights").iterdir():  # the weights, and the grader and gate fitted onto them
        if weights.name != "last.safetensors":
            shutil.copy(weights, folder / "weights" / weights.name)
    if synthetic is not None:
        config = yaml.safe_load((folder / "config.yaml").read_text())
        config["data"]["synthetic"] = {"out": str(synthetic), "n_seg": 8, "n_cls": 24, "width": 512, "seed": 0,
                                       **synth}
        (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def encode(array: np.ndarray | Image.Image, fmt: str = "PNG", **options) -> bytes:
    image = array if isinstance(array, Image.Image) else Image.fromarray(array)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels in a few bytes: what a decompression bomb looks like to a
    decoder before it allocates (PIL checks the size when it opens the file)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + \
        chunk(b"IEND", b"")


def photograph(width: int = 640, height: int = 426, seed: int = 3) -> np.ndarray:
    return fundus(width, height, seed)


def bad_uploads() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, the words the page must show right after the file's name); every one is refused with a
    message that names the file (``python -m core predict`` writes the same words after the path)."""
    good_jpeg = encode(photograph(), "JPEG", quality=90)
    return {
        "notes.jpg": (b"these are my notes, not a photograph\n" * 20, "is not an image file (unknown format)"),
        "truncated.jpg": (good_jpeg[: len(good_jpeg) // 2], "does not decode"),
        "empty.png": (b"", "is empty (0 bytes)"),
        "huge-100mp.png": (png_header_only(12_000, 8_400), "is too large to decode safely"),
        "bomb.png": (png_header_only(30_000, 30_000), "is too large to decode safely"),
        "tiny-10x10.png": (encode(photograph(10, 10)), "is only 10x10 pixels"),  # core.infer.admission
        "strip-4000x20.png": (encode(np.full((20, 4000, 3), 120, np.uint8)), "is 4000x20 pixels, 200.0 times longer"),
    }


def odd_but_valid_uploads() -> dict[str, tuple[bytes, str | None]]:
    """name -> (bytes, a warning the page must show or None); every one gets a prediction."""
    rgb = photograph()
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    sixteen = Image.fromarray(grey.astype(np.uint16) * 257)  # mode I;16
    return {
        "small-120x80.png": (encode(photograph(120, 80)), "only 120x80 pixels"),
        "palette.gif": (encode(rgb, "GIF"), "a palette image: converted to RGB"),
        "grey-said.png": (encode(grey), "a greyscale image: its one channel was copied"),
        "grey.png": (encode(grey), None),
        "rgba.png": (encode(rgba), None),
        "sixteen-bit.png": (encode(sixteen), None),
        "photo.tif": (encode(rgb, "TIFF"), None),
    }


REAL = ROOT / "checkpoints" / "idrid"


def copy_real(root: Path, roots: list[str] | None = None) -> Path:
    """The shipped real-data run (weights, history, its validation evaluation) under ``root/idrid``.

    With ``roots``, its config and metadata name those dataset folders instead, as on a machine where IDRiD lies
    elsewhere (or nowhere).
    """
    folder = root / "idrid"
    shutil.copytree(REAL, folder)
    if roots is not None:
        config = yaml.safe_load((folder / "config.yaml").read_text())
        config["data"]["roots"] = list(roots)
        (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        metadata = folder / "metadata.json"
        if metadata.exists():
            document = json.loads(metadata.read_text())
            document["root"] = list(roots)
            metadata.write_text(json.dumps(document))
    return folder


# -- driving the app with Streamlit's AppTest ------------------------------------------------------------------------

APP = str(ROOT / "app.py")
APP_TIMEOUT = 90


def start(page: str | None = None, timeout: float = APP_TIMEOUT) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    if page:
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info]
    parts += [w.value for w in at.warning] + [e.value for e in at.error]
    return "\n".join(str(p) for p in parts)


def errors(at: AppTest) -> list[str]:
    return [str(e.value) for e in at.error] + [str(e.value) for e in at.sidebar.error]


def charts(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


def image_captions(at: AppTest) -> list[str]:
    """The captions of every ``st.image`` (they live in the image's message, not in a caption element)."""
    return [image.caption for element in at.get("image") for image in element.proto.imgs]
