"""Fixed 3D sine-cosine position embeddings, computed for the actual token grid.

The layout follows V-JEPA / V-JEPA 2 so that their non-RoPE checkpoints give identical
outputs at the grid they were trained on: the channel axis is split into a temporal, a height
and a width part (in that order), and each part is ``[sin(p * w_k), cos(p * w_k)]`` with
``w_k = 10000^(-k / (d/2))``.
"""

from __future__ import annotations

import math

import torch


def sincos_split(dim: int, uniform_power: bool) -> tuple[int, int, int]:
    """Channels given to (t, h, w) in the 3D sin-cos embedding.

    V-JEPA's default gives half the channels to time and a quarter to each spatial axis;
    ``uniform_power=True`` (used by V-JEPA 1 configs) gives each axis ``2 * ceil(dim / 6)``
    channels and truncates the concatenation to ``dim``.
    """
    if uniform_power:
        each = 2 * math.ceil(dim / 6)
        return each, each, each
    if dim % 8 != 0:
        raise ValueError(
            f"3D sin-cos position embedding with the (1/2, 1/4, 1/4) split needs a width divisible by 8, "
            f"got {dim}; use a width that is a multiple of 8 or sincos_uniform_power=True"
        )
    return dim // 2, dim // 4, dim // 4


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """1D sin-cos embedding (Vaswani et al. 2017, Sec. 3.5): ``[sin(p w_k), cos(p w_k)]``, ``w_k = 10000^(-2k/dim)``.

    ``pos``: float positions [M]; returns [M, dim] in ``pos.dtype``.
    """
    if dim % 2 != 0:
        raise ValueError(f"1D sin-cos embedding needs an even width, got {dim}")
    half = dim // 2
    omega = torch.arange(half, dtype=pos.dtype, device=pos.device) / half
    omega = 10000.0 ** (-omega)
    angles = pos[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_3d(
    dim: int,
    grid: tuple[int, int, int],
    *,
    uniform_power: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """3D sin-cos table [T' * Hp * Wp, dim] for tokens in (t, h, w) order.

    Computed in float64 and cast, so the table is the same on every device and dtype.
    """
    t_dim, h_dim, w_dim = sincos_split(dim, uniform_power)
    nt, nh, nw = grid
    tt, hh, ww = torch.meshgrid(
        torch.arange(nt, dtype=torch.float64),
        torch.arange(nh, dtype=torch.float64),
        torch.arange(nw, dtype=torch.float64),
        indexing="ij",
    )
    table = torch.cat(
        [sincos_1d(t_dim, tt.reshape(-1)), sincos_1d(h_dim, hh.reshape(-1)), sincos_1d(w_dim, ww.reshape(-1))],
        dim=1,
    )[:, :dim]
    return table.to(dtype=dtype, device=device)


class SinCos3D(torch.nn.Module):
    """Holds no weights; returns the sin-cos table for a grid, cached per (grid, device, dtype)."""

    def __init__(self, dim: int, uniform_power: bool = False):
        super().__init__()
        sincos_split(dim, uniform_power)  # validate the width now, not at the first forward
        self.dim = dim
        self.uniform_power = uniform_power
        self._cache: dict[tuple, torch.Tensor] = {}

    def forward(self, grid: tuple[int, int, int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (tuple(grid), str(device), dtype)
        table = self._cache.get(key)
        if table is None:
            table = sincos_3d(self.dim, grid, uniform_power=self.uniform_power, dtype=dtype, device=device)
            if len(self._cache) > 16:  # many distinct grids (multi-resolution eval): keep memory bounded
                self._cache.clear()
            self._cache[key] = table
        return table

    def extra_repr(self) -> str:
        return f"dim={self.dim}, uniform_power={self.uniform_power}"
