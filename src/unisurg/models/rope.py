"""3D rotary position embedding (RoPE) as in V-JEPA 2 (Assran et al. 2025, Sec. 2 "3D-RoPE").

Each attention head's channels are cut into a temporal, a height and a width segment of
``a = 2 * ((head_dim // 3) // 2)`` channels each (in that order); the remaining
``head_dim - 3a`` channels are not rotated. Within a segment, channels ``(2i, 2i+1)`` form a pair
rotated by the position along that axis.

Frequencies. With ``a/2`` base frequencies ``w_k = 10000^(-k / (a/2))``:

- ``variant="vjepa2"`` (default, what the released V-JEPA 2 weights were trained with): channel
  ``j`` of a segment uses angle ``p * w_(j mod a/2)``. The two members of a pair therefore get
  *different* angles (the upstream code tiles ``[w_0..w_(a/2-1)]`` twice instead of repeating each
  frequency); it is kept because official weights only reproduce their outputs with it.
- ``variant="standard"``: both members of pair ``i`` use ``p * w_i`` (a true 2D rotation).
"""

from __future__ import annotations

import torch

ROPE_VARIANTS = ("vjepa2", "standard")


def rope_axis_dim(head_dim: int) -> int:
    """Channels per axis (t, h, w) of one head: ``2 * ((head_dim // 3) // 2)``, as in V-JEPA 2."""
    return 2 * ((head_dim // 3) // 2)


def token_positions(idx: torch.Tensor, grid: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(t, h, w) grid coordinates of token indices ``n = t * Hp * Wp + h * Wp + w``."""
    _, nh, nw = grid
    per_frame = nh * nw
    t = torch.div(idx, per_frame, rounding_mode="floor")
    s = idx - t * per_frame
    h = torch.div(s, nw, rounding_mode="floor")
    w = s - h * nw
    return t, h, w


def axis_angles(pos: torch.Tensor, axis_dim: int, variant: str = "vjepa2") -> torch.Tensor:
    """Rotation angle of every channel of one axis segment: [..., N] -> [..., N, axis_dim] (float32)."""
    half = axis_dim // 2
    omega = torch.arange(half, dtype=torch.float32, device=pos.device) / half
    omega = 10000.0 ** (-omega)
    if variant == "vjepa2":
        omega = omega.repeat(2)  # w_0..w_{h-1}, w_0..w_{h-1}: channel j uses w_(j mod h)
    elif variant == "standard":
        omega = omega.repeat_interleave(2)  # w_0, w_0, w_1, w_1, ...: one angle per pair
    else:
        raise ValueError(f"unknown RoPE variant {variant!r}; expected one of {ROPE_VARIANTS}")
    return pos.to(torch.float32)[..., None] * omega


def rope_cos_sin(
    idx: torch.Tensor, grid: tuple[int, int, int], head_dim: int, variant: str = "vjepa2"
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the angles for tokens ``idx`` ([N] or [B, N]).

    Returns two float32 tensors shaped [1 or B, 1, N, 3a] (broadcast over heads), computed once
    per forward and shared by all blocks.
    """
    a = rope_axis_dim(head_dim)
    if a == 0:
        raise ValueError(f"RoPE needs a head width of at least 6 channels, got {head_dim}")
    t, h, w = token_positions(idx, grid)
    angles = torch.cat([axis_angles(p, a, variant) for p in (t, h, w)], dim=-1)
    if angles.dim() == 2:
        angles = angles[None]
    angles = angles[:, None]  # heads axis
    return angles.cos(), angles.sin()


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x_0, x_1, x_2, x_3, ...) -> (-x_1, x_0, -x_3, x_2, ...): multiplication by i of each pair."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``3a`` channels of ``x`` [B, heads, N, head_dim]: ``x cos + rot(x) sin``.

    Segments start at even offsets, so rotating pairs over the whole ``3a`` block equals
    rotating each axis segment on its own.
    """
    r = cos.shape[-1]
    cos = cos.to(x.dtype)
    sin = sin.to(x.dtype)
    xr = x[..., :r]
    out = xr * cos + rotate_pairs(xr) * sin
    if r == x.shape[-1]:
        return out
    return torch.cat([out, x[..., r:]], dim=-1)
