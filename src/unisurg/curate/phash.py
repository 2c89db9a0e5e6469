"""Perceptual hashes of video frames and vectorised Hamming search.

Two 64-bit hashes, both computed on a grayscale, area-downsampled thumbnail (area averaging is
what makes them insensitive to resizing and to re-encoding noise):

* :func:`phash` (DCT hash, after Zauner 2010 / pHash.org): 32x32 thumbnail, orthonormal 2-D
  DCT-II, the 64 lowest-frequency AC coefficients (by u+v, then u; the DC term is left out
  because it only encodes mean brightness, and would be a constant bit), each bit = coefficient
  above the median of the 64. Robust to scaling, JPEG/H.264 re-encoding, mild colour changes.
* :func:`dhash` (difference hash): 9x8 thumbnail, bit = pixel brighter than its left neighbour.

Hashes are ``uint64`` (the first coefficient in the most significant bit). Hamming distances
use ``np.bitwise_count`` on XORed words, in blocks, so memory stays ``block x len(b)`` bytes;
:func:`hamming_matrix_torch` does the same as one matrix product of +-1 bit vectors
(``d = (64 - a.b) / 2``), for GPUs.

Near-uniform frames (black screens, fades) have no structure to hash: their bits are noise or
all equal, and they would "match" across unrelated videos. :func:`hash_frames` therefore also
returns each frame's thumbnail contrast so callers can mark such frames as uninformative.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np
import torch

HASH_BITS = 64
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601


def _as_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim == 2:
        frames = frames[None]  # one gray frame; a single colour frame must be passed as frame[None]
    if frames.ndim == 4:
        if frames.shape[-1] not in (1, 3, 4):
            raise ValueError(f"frames must be N x H x W x C with C in (1, 3, 4) (channels last), got shape {frames.shape}")
    elif frames.ndim != 3:
        raise ValueError(f"frames must be N x H x W (gray) or N x H x W x C, got shape {frames.shape}")
    if frames.shape[1] < 1 or frames.shape[2] < 1:
        raise ValueError(f"frames have an empty spatial size: {frames.shape}")
    return frames


def to_gray(frames: np.ndarray) -> np.ndarray:
    """Luma (BT.601) as float32 ``N x H x W``; alpha ignored, gray input passed through."""
    frames = _as_frames(frames)
    if frames.ndim == 3:
        return frames.astype(np.float32)
    if frames.shape[-1] == 1:
        return frames[..., 0].astype(np.float32)
    return frames[..., :3].astype(np.float32) @ LUMA


@lru_cache(maxsize=64)
def area_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``n_out x n_in`` matrix of exact area averaging: output cell i covers input interval
    ``[i n_in/n_out, (i+1) n_in/n_out)``; each input pixel weighs by its overlap."""
    edges = np.arange(n_out + 1, dtype=np.float64) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    j = np.arange(n_in, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0.0, None)
    return (overlap / (n_in / n_out)).astype(np.float32)


def area_resize(gray: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-resize ``N x H x W`` float images to ``N x height x width`` (two small matrix products)."""
    n, h, w = gray.shape
    rh = area_resize_matrix(h, height)
    rw = area_resize_matrix(w, width)
    cols = (gray.reshape(n * h, w) @ rw.T).reshape(n, h, width)  # one large GEMM first
    return rh @ cols


@lru_cache(maxsize=8)
def dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix ``C`` (``C @ x`` transforms a length-n signal)."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    c = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    c[0] /= np.sqrt(2.0)
    return c.astype(np.float32)


@lru_cache(maxsize=8)
def low_frequency_order(n: int, count: int = HASH_BITS) -> np.ndarray:
    """Flat indices of the ``count`` lowest-frequency AC coefficients of an n x n DCT (by u+v, then u)."""
    u, v = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    order = np.lexsort((u.ravel(), (u + v).ravel()))
    return order[1 : count + 1]  # order[0] is the DC term


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """``N x 64`` booleans -> ``N`` uint64 (bit 0 in the most significant position)."""
    bits = np.asarray(bits, dtype=bool)
    if bits.ndim != 2 or bits.shape[1] != HASH_BITS:
        raise ValueError(f"expected N x {HASH_BITS} bits, got shape {bits.shape}")
    packed = np.packbits(bits, axis=1, bitorder="big")
    return np.ascontiguousarray(packed).view(">u8").ravel().astype(np.uint64)


def unpack_bits(hashes: np.ndarray) -> np.ndarray:
    """``N`` uint64 -> ``N x 64`` booleans (inverse of :func:`pack_bits`)."""
    h = np.ascontiguousarray(np.asarray(hashes, dtype=np.uint64).astype(">u8"))
    return np.unpackbits(h.view(np.uint8).reshape(-1, 8), axis=1, bitorder="big").astype(bool)


def _batches(frames: np.ndarray, batch_size: int):
    for s in range(0, len(frames), batch_size):
        yield frames[s : s + batch_size]


def _dct_bits(thumb: np.ndarray) -> np.ndarray:
    c = dct_matrix(thumb.shape[1])
    coeffs = (c @ thumb @ c.T).reshape(len(thumb), -1)[:, low_frequency_order(thumb.shape[1])]
    return coeffs > np.median(coeffs, axis=1, keepdims=True)


def _dhash_bits(thumb: np.ndarray) -> np.ndarray:
    return (thumb[:, :, 1:] > thumb[:, :, :-1]).reshape(len(thumb), -1)


def hash_frames(
    frames: np.ndarray,
    *,
    kind: Literal["dct", "dhash"] = "dct",
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Perceptual hashes (``uint64[N]``) and thumbnail contrasts (``float32[N]``, the standard
    deviation of the 32x32 gray thumbnail on the 0-255 scale) of ``N x H x W[ x C]`` uint8 frames.

    Frames are processed ``batch_size`` at a time so float memory stays bounded. A contrast
    below ~4 means a near-uniform frame whose hash carries no information.
    """
    frames = _as_frames(frames)
    if kind not in ("dct", "dhash"):
        raise ValueError(f"kind={kind!r}; use 'dct' or 'dhash'")
    hashes, contrast = [], []
    for batch in _batches(frames, batch_size):
        gray = to_gray(batch)
        thumb32 = area_resize(gray, 32, 32)
        contrast.append(thumb32.reshape(len(batch), -1).std(axis=1))
        bits = _dct_bits(thumb32) if kind == "dct" else _dhash_bits(area_resize(gray, 8, 9))
        hashes.append(pack_bits(bits))
    if not hashes:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.float32)
    return np.concatenate(hashes), np.concatenate(contrast).astype(np.float32)


def phash(frames: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """64-bit DCT perceptual hash of each frame (see module doc)."""
    return hash_frames(frames, kind="dct", batch_size=batch_size)[0]


def dhash(frames: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """64-bit difference hash of each frame (see module doc)."""
    return hash_frames(frames, kind="dhash", batch_size=batch_size)[0]


def _as_hashes(h: np.ndarray, name: str) -> np.ndarray:
    h = np.asarray(h)
    if h.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of uint64 hashes, got shape {h.shape}")
    if h.dtype != np.uint64:
        if not np.issubdtype(h.dtype, np.integer):
            raise ValueError(f"{name}: hashes must be uint64 integers, got dtype {h.dtype}")
        h = h.astype(np.uint64)
    return h


def hamming_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All pairwise Hamming distances ``len(a) x len(b)`` (uint8). Use :func:`nearest_hamming` or
    :func:`hamming_pairs` for large sets: they work in blocks."""
    a, b = _as_hashes(a, "a"), _as_hashes(b, "b")
    return np.bitwise_count(a[:, None] ^ b[None, :]).astype(np.uint8)


def _row_blocks(n_rows: int, n_cols: int, block_elements: int):
    rows = max(1, block_elements // max(n_cols, 1))
    for s in range(0, n_rows, rows):
        yield s, min(s + rows, n_rows)


def nearest_hamming(a: np.ndarray, b: np.ndarray, *, block_elements: int = 1 << 24) -> tuple[np.ndarray, np.ndarray]:
    """For each hash in ``a``: index of the nearest hash in ``b`` (first on ties) and the distance."""
    a, b = _as_hashes(a, "a"), _as_hashes(b, "b")
    if len(b) == 0:
        raise ValueError("b is empty: no hashes to search")
    idx = np.empty(len(a), dtype=np.int64)
    dist = np.empty(len(a), dtype=np.uint8)
    for s, e in _row_blocks(len(a), len(b), block_elements):
        d = np.bitwise_count(a[s:e, None] ^ b[None, :])
        idx[s:e] = d.argmin(axis=1)
        dist[s:e] = d[np.arange(e - s), idx[s:e]]
    return idx, dist


def hamming_pairs(a: np.ndarray, b: np.ndarray, max_distance: int, *, block_elements: int = 1 << 24) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``(i, j, d)`` with ``d = hamming(a[i], b[j]) <= max_distance``, sorted by (i, j)."""
    a, b = _as_hashes(a, "a"), _as_hashes(b, "b")
    out_i, out_j, out_d = [], [], []
    for s, e in _row_blocks(len(a), len(b), block_elements):
        d = np.bitwise_count(a[s:e, None] ^ b[None, :])
        i, j = np.nonzero(d <= max_distance)
        out_i.append(i + s)
        out_j.append(j)
        out_d.append(d[i, j])
    if not out_i:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), np.zeros(0, dtype=np.uint8)
    return np.concatenate(out_i).astype(np.int64), np.concatenate(out_j).astype(np.int64), np.concatenate(out_d).astype(np.uint8)


def hash_signs(hashes: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """Hashes as ``N x 64`` float +-1 vectors, so that Hamming = (64 - a.b) / 2 is a matrix product."""
    bits = torch.from_numpy(unpack_bits(_as_hashes(hashes, "hashes")).astype(np.float32)).to(device)
    return bits * 2.0 - 1.0


def hamming_matrix_torch(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """Pairwise Hamming distances via one GEMM of +-1 vectors (exact: integers <= 64 in float32).

    ``a``/``b``: uint64 hashes or the output of :func:`hash_signs`. Returns int16 ``len(a) x len(b)``.
    """
    sa = a if isinstance(a, torch.Tensor) else hash_signs(a, device)
    sb = b if isinstance(b, torch.Tensor) else hash_signs(b, device)
    return ((HASH_BITS - sa @ sb.T) * 0.5).round().to(torch.int16)


__all__ = [
    "area_resize",
    "dhash",
    "hamming_matrix",
    "hamming_matrix_torch",
    "hamming_pairs",
    "hash_frames",
    "hash_signs",
    "nearest_hamming",
    "pack_bits",
    "phash",
    "to_gray",
    "unpack_bits",
]
