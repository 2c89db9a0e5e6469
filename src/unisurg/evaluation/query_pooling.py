"""Cross-attention of one learnt query shared by the whole batch, without projecting keys or values.

The attentive probe's last block (V-JEPA 2's ``CrossAttentionBlock``) lets one query token attend
to all ``N`` tokens. Written plainly it projects every token to keys and values
(``kv = x W_kv + b_kv``: ``2 W^2`` multiply-adds per token, forward, and twice that backward) only
to reduce them to one output per head. Because the query is a parameter (the same for every sample),
the projections can be moved to the query side and to the pooled result instead
(per probe ``p`` and head ``h``, ``d = W / H``):

* scores: ``q_h . (W_k,h^T x_n + b_k,h) / sqrt(d) = x_n . u_h + c_h`` with ``u_h = W_k,h q_h / sqrt(d)``;
  ``c_h = q_h . b_k,h / sqrt(d)`` is the same for every token, and softmax over tokens ignores it;
* values: ``sum_n a_hn (W_v,h^T x_n + b_v,h) = W_v,h^T (sum_n a_hn x_n) + b_v,h`` since ``sum_n a_hn = 1``.

So a probe's cross-attention costs ``2 H W`` per token instead of ``2 W^2`` (16x less at W=256,
H=16), with the same result up to rounding (mathematically identical; the tests compare against
plain softmax attention in float64). The stacked weights keep their ``nn.Linear``-like layout, so
checkpoints and :meth:`MultiProbe.select` are unchanged.
"""

from __future__ import annotations

import math

import torch


def shared_query_attention(q: torch.Tensor, x: torch.Tensor, w_kv: torch.Tensor, b_kv: torch.Tensor | None,
                           heads: int) -> torch.Tensor:
    """Multi-head attention of one query per probe over ``x``, keys / values projected implicitly.

    ``q``: the projected queries ``[P, W]`` (one per probe, shared by the batch); ``x``: the
    (normalised) tokens ``[P, B, N, W]``; ``w_kv``: ``[P, W, 2W]`` (keys then values, as
    :class:`~unisurg.evaluation.probe_layers.MultiLinear` stores them); ``b_kv``: ``[P, 2W]`` or None.
    Returns the attention output before the output projection, ``[P, B, 1, W]`` (heads concatenated).
    """
    P, B, N, W = x.shape
    d = W // heads
    w_k = w_kv[..., :W].to(x.dtype).reshape(P, W, heads, d)
    w_v = w_kv[..., W:].to(x.dtype).reshape(P, W, heads, d)
    u = torch.einsum("pihe,phe->pih", w_k, q.view(P, heads, d)) * (1.0 / math.sqrt(d))  # [P, W, H]
    scores = torch.bmm(x.reshape(P, B * N, W), u).view(P * B, N, heads)
    attn = torch.softmax(scores, dim=1)  # over tokens
    pooled = torch.bmm(attn.transpose(1, 2), x.reshape(P * B, N, W)).view(P, B, heads, W)  # [P, B, H, W]
    out = torch.einsum("pbhi,pihe->pbhe", pooled, w_v)  # [P, B, H, d]
    if b_kv is not None:
        out = out + b_kv[:, W:].to(x.dtype).view(P, 1, heads, d)
    return out.reshape(P, B, 1, W)
