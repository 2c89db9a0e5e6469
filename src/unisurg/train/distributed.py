"""Process group, device and data-parallel wrapping (DDP or FSDP2) for ``torchrun`` launches.

One process per device. ``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without
them the run is a single process and nothing is initialised. Backend: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import datetime
import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

from unisurg.device import resolve_device
from unisurg.rank_exit import hold_process_group


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def init_distributed(device_preference: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the ``torchrun`` process group if the environment names one; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, local_rank=local_rank, setting="run.device")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world <= 1:
        return DistInfo(device=device)
    initialised_here = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kw = dict(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
        if device.type == "cuda":
            kw["device_id"] = device
        dist.init_process_group(**kw)
        initialised_here = True
    hold_process_group()  # its last owner must not be a model freed on this thread (unisurg.rank_exit)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device, initialised_here)


def shutdown(info: DistInfo) -> None:
    if info.initialised_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean over ranks (in place on a copy); identity for one process."""
    if not info.distributed:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / info.world


def broadcast_object(obj, info: DistInfo):
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj, info: DistInfo) -> list:
    if not info.distributed:
        return [obj]
    out = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def wrap_ddp(module: nn.Module, info: DistInfo) -> nn.Module:
    """DDP over ``module`` (broadcasts rank 0's parameters at construction); identity for one process.

    ``static_graph``: the same parameters take part in every step, so DDP can skip the search
    for unused parameters.
    """
    if not info.distributed:
        return module

    ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, static_graph=True)


def shard_fsdp(module: nn.Module, block_lists: list[nn.ModuleList], info: DistInfo, *,
               reshard_root: bool = False) -> nn.Module:
    """FSDP2: ``fully_shard`` every transformer block, then the root (which must define ``forward``).

    Parameters become DTensors sharded on dim 0 over all ranks; each block gathers its weights
    just before use and frees them after. ``reshard_root=True`` for a module used only under
    ``no_grad`` (the EMA target), so its root parameters are sharded again after each forward.
    Mixed precision comes from autocast in the step, as with DDP.
    """

    # the students return the predictions as views of a projection; the losses use them out of place
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    mesh = init_device_mesh(info.device.type, (info.world,))
    for blocks in block_lists:
        for blk in blocks:
            fully_shard(blk, mesh=mesh)
    fully_shard(module, mesh=mesh, reshard_after_forward=True if reshard_root else None)
    return module


def unwrap(module: nn.Module) -> nn.Module:
    """The module under DDP / ``torch.compile`` wrappers (FSDP2 modifies modules in place)."""
    module = getattr(module, "module", module)
    return getattr(module, "_orig_mod", module)
