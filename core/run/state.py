"""The resumable training state (``state/last.pt``): optimizer, scheduler, counters and random generators.

Our own file, written by our own trainer, so pickle is acceptable here (weights never are: ``core.run.weights``).
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.errors import ConfigError
from core.fileio import atomic_write_bytes


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path: Path, **state: Any) -> Path:
    """Optimizer, scheduler, counters and RNG states for ``--resume``."""
    buffer = io.BytesIO()
    torch.save({**state, "rng": rng_state()}, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise ConfigError(f"cannot resume: {path} does not exist (the run never finished a step)") from None
