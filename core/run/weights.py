"""Weights as safetensors (never pickles, which can run code when loaded).

A weights file carries the backbone name and the model's shape-defining settings in its header, so loading it
into a differently built model is refused with a message that says what differs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors_bytes

from core.errors import ConfigError
from core.fileio import atomic_write_bytes

FORMAT = "idrid-studio-weights/1"


def save_weights(model: torch.nn.Module, path: Path, model_config: dict[str, Any],
                 dtype: torch.dtype = torch.float32, extra: dict[str, str] | None = None) -> Path:
    """Floating tensors are stored in ``dtype`` (float16 halves the size of a shipped run)."""
    tensors = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu")
        if tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[name] = tensor.contiguous()
    header = {"format": FORMAT, "model": json.dumps(model_config, sort_keys=True), **(extra or {})}
    return atomic_write_bytes(path, save_safetensors_bytes(tensors, metadata=header))


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and header of a weights file; anything but our safetensors is refused clearly."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"weights {path} are not a .safetensors file; only safetensors weights are loaded")
    if not path.exists():
        raise ConfigError(f"weights file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, ValueError, OSError) as error:
        raise ConfigError(f"weights file {path} is not valid safetensors ({error})") from None
    if header.get("format") != FORMAT:
        raise ConfigError(f"weights file {path} was not written by this studio (format {header.get('format')!r})")
    return tensors, header


def load_weights(model: torch.nn.Module, path: Path, model_config: dict[str, Any] | None = None) -> dict[str, str]:
    """Load into ``model`` (cast to its dtypes); a model built differently from the file is refused."""
    tensors, header = read_weights(path)
    if model_config is not None:
        saved = json.loads(header.get("model", "{}"))
        # keys a file predates are not compared; a shape mismatch would still be caught below
        differences = {k: (saved[k], v) for k, v in model_config.items() if k in saved and saved[k] != v}
        if differences:
            listing = ", ".join(f"{k}: file {a!r} vs config {b!r}" for k, (a, b) in differences.items())
            raise ConfigError(f"weights {path} do not match this model ({listing})")
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = [k for k in own if k in tensors and tuple(own[k].shape) != tuple(tensors[k].shape)]
    if missing or unexpected or wrong:
        raise ConfigError(
            f"weights {path} do not fit this model: {len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(wrong)} of another shape (first: {(missing + unexpected + wrong)[0]})"
        )
    model.load_state_dict({k: tensors[k].to(own[k].dtype) for k in own})
    return header
