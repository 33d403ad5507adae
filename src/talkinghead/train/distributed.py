"""Process-group set-up for ``torchrun`` (single- or multi-node) and plain single-process runs.

``torchrun --nproc_per_node=G [--nnodes=N --node_rank=R --rdzv_endpoint=HOST:PORT] -m talkinghead.cli train ...``
sets RANK / WORLD_SIZE / LOCAL_RANK; we then use NCCL on GPUs and gloo on CPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    #: Ranks on this node (torchrun's LOCAL_WORLD_SIZE), to share the node's CPU cores.
    local_world_size: int = 1
    #: A gloo group for host-side flags (stop requests, time limit): agreeing on them costs
    #: no GPU synchronisation. None: use the default group (already gloo on CPU).
    control_group: object = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Initialise the default process group when launched by torchrun; pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if device not in (None, "cpu", "cuda") and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    control_group = None
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        if use_cuda:
            control_group = dist.new_group(backend="gloo")
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev,
                    local_world_size=local_world_size, control_group=control_group)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_mean(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average scalar logs over ranks (one collective for the whole dict)."""
    if not info.distributed:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    t /= info.world_size
    return dict(zip(keys, t.tolist()))


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank if ``flag`` is true on any (so all ranks stop together)."""
    if not info.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def agree_max(value: int, info: DistInfo) -> int:
    """The largest of every rank's host-side ``value`` (a CPU collective on the control group:
    it does not wait for the GPU's queued work)."""
    if not info.distributed:
        return value
    t = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=info.control_group)
    return int(t.item())
