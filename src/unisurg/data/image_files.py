"""Decoding the image files of the benchmarks exactly as distributed.

* Frame files are decoded by their content, not their name: the PitVis challenge frames are JPEG
  bytes under ``.png`` names.
* Kvasir-SEG masks are lossy JPEGs: a mask pixel is foreground when its grey level is >= 128.
* C3VD depth maps are 16-bit TIFFs, 0..65535 <-> 0..100 mm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

MASK_THRESHOLD = 128
C3VD_DEPTH_MAX_MM = 100.0
C3VD_DEPTH_MAX_CODE = 65535


def sniff_format(path: Path) -> str:
    """``"jpeg"``, ``"png"``, ``"tiff"`` or ``"unknown"`` from the first bytes of the file."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(JPEG_MAGIC):
        return "jpeg"
    if head.startswith(PNG_MAGIC):
        return "png"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return "unknown"


def read_image(path: Path | str) -> np.ndarray:
    """RGB ``uint8 [H, W, 3]`` of an image file, whatever its extension says.

    JPEG content (PitVis ``.png`` frames, Kvasir ``.jpg``) is decoded with libjpeg-turbo through
    simplejpeg; everything else through Pillow.
    """
    path = Path(path)
    kind = sniff_format(path)
    if kind == "jpeg":
        return simplejpeg.decode_jpeg(path.read_bytes(), colorspace="RGB")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as e:  # PIL raises several unrelated types for undecodable files
        raise ValueError(f"{path}: cannot decode image ({kind} content): {e}") from None


def read_mask(path: Path | str, threshold: int = MASK_THRESHOLD) -> np.ndarray:
    """Binary mask ``bool [H, W]``: grey level ``>= threshold``.

    Polyp masks are distributed as JPEG (Kvasir-SEG, lossy: values near 0 and 255 plus ringing) or
    PNG (PraNet's copies); colour masks are reduced to grey (ITU-R 601 luma) first.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            grey = np.asarray(im.convert("L"))
    except Exception as e:
        raise ValueError(f"{path}: cannot decode mask: {e}") from None
    return grey >= threshold


def read_depth_mm(path: Path | str) -> np.ndarray:
    """C3VD depth map in millimetres, ``float32 [H, W]``: ``code * 100 / 65535``.

    The file must be a single-channel 16-bit image (Pillow modes ``I;16``/``I;16B``/``I``/``I;16L``).
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            mode = im.mode
            arr = np.asarray(im)
    except Exception as e:
        raise ValueError(f"{path}: cannot decode depth TIFF: {e}") from None
    if mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I") or arr.ndim != 2:
        raise ValueError(
            f"{path}: depth map has Pillow mode {mode!r} and shape {arr.shape}; expected a single-channel "
            "16-bit TIFF (C3VD: 0..65535 <-> 0..100 mm)"
        )
    if arr.dtype != np.uint16:
        if arr.min() < 0 or arr.max() > C3VD_DEPTH_MAX_CODE:
            raise ValueError(f"{path}: depth codes outside 0..65535")
        arr = arr.astype(np.uint16)
    return arr.astype(np.float32) * np.float32(C3VD_DEPTH_MAX_MM / C3VD_DEPTH_MAX_CODE)
