"""Choosing the torch device, the one rule every command uses.

``"auto"`` is CUDA when it is there, else the CPU; a CUDA device asked for on a machine without CUDA
is an error naming the setting to change; under ``torchrun`` each process takes GPU ``LOCAL_RANK``.
"""

from __future__ import annotations

import torch


class DeviceError(RuntimeError):
    """A device setting this machine cannot honour."""


def resolve_device(name: str | torch.device | None = "auto", *, local_rank: int = 0, setting: str = "device") -> torch.device:
    """``"auto"`` / ``None``, ``"cpu"``, ``"cuda"`` (GPU ``local_rank`` of this node) or an explicit ``"cuda:1"``."""
    if isinstance(name, torch.device):
        dev = name
    elif name is None or name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        dev = torch.device("cuda")
    else:
        try:
            dev = torch.device(name)
        except RuntimeError as e:
            raise DeviceError(f"{setting}={name!r} is not a device name (auto, cpu, cuda, cuda:N)") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"{setting}={name!r} but CUDA is not available; use {setting}=auto or {setting}=cpu")
        if dev.index is None:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
    return dev
