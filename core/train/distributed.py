"""Multi-process training under ``torchrun``: process-group set-up, rank-0-only writes, metric reduction.

Nothing here is needed for a single process: every helper degrades to a no-op when WORLD_SIZE is unset or 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the group torchrun described in the environment: gloo on CPU, nccl on CUDA."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank)


def reduce_sum(values: dict[str, float], info: DistInfo, device: torch.device) -> dict[str, float]:
    """Sum each value over ranks (counts and sums; divide afterwards for means)."""
    if not info.enabled or not values:
        return dict(values)
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return dict(zip(keys, tensor.tolist(), strict=True))


def broadcast_flag(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """Rank 0's decision (stop now, say) made everyone's, so all ranks leave the loop at the same step."""
    if not info.enabled:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def weights_checksum(model: torch.nn.Module) -> float:
    """A cheap fingerprint of the parameters: equal on every rank of a healthy DDP run."""
    with torch.no_grad():
        return float(sum(p.double().sum() + (p.double() ** 2).sum() for p in model.parameters()))


def gather_checksums(model: torch.nn.Module, info: DistInfo, device: torch.device) -> list[float]:
    """Every rank's fingerprint (one element when not distributed)."""
    value = torch.tensor([weights_checksum(model)], dtype=torch.float64, device=device)
    if not info.enabled:
        return [float(value)]
    gathered = [torch.zeros_like(value) for _ in range(info.world_size)]
    dist.all_gather(gathered, value)
    return [float(v) for v in gathered]
