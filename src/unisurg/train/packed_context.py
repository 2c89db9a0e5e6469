"""The context encoder over several mask families of one clip in one pass ("packing").

V-JEPA 2 draws two mask families per clip (8 small and 2 large blocks) and runs the context encoder
once per family. Every layer but attention acts per token, so the families' context tokens can go
through the encoder together: concatenated along the token axis, with attention restricted to each
family's own tokens (``segments``). The result equals one pass per family (same arithmetic per
token; checked in tests/test_packed_context.py), with half the layer calls and larger matrix
products -- what a small model or a short context is bound by. The patch embedding of the clip is
computed once either way.

Packing needs unpadded families (padding would need a mask inside a segment) and no stochastic
depth while training (a per-sample drop decision would be shared by the families); otherwise the
families run one after the other.
"""

from __future__ import annotations

import torch

from unisurg.models.vit import VideoViT
from unisurg.train.masks import MaskBatch


def encode_context_sets(encoder: VideoViT, x: torch.Tensor, masks: list[MaskBatch]) -> list[torch.Tensor]:
    """``[encoder(x, **m.encoder_kwargs()) for m in masks]``, the families packed into one pass when possible."""
    embedded = encoder.embed(x)
    packable = (len(masks) > 1 and not any(m.context_padded for m in masks)
                and (encoder.config.drop_path_rate == 0 or not encoder.training))
    if not packable:
        return [encoder(x, embedded=embedded, **m.encoder_kwargs()) for m in masks]
    lengths = tuple(int(m.context_idx.shape[1]) for m in masks)  # shapes: no device sync
    z = encoder(x, context_idx=torch.cat([m.context_idx for m in masks], dim=1), embedded=embedded,
                segments=lengths)
    return list(z.split(lengths, dim=1))
