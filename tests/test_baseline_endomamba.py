"""EndoMamba loaded from its official checkpoint layouts reproduces the official model code.

The expected outputs come from nekocatso/EndoMamba run on a tiny random configuration with its pure-PyTorch
reference kernels (see tests/fixtures/baselines/endomamba/README.md).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unisurg.backbones.endomamba import build_endomamba
from unisurg.backbones.registry import detect_kind, load_backbone
from unisurg.models import endomamba as em
from unisurg.models.endomamba import (
    selective_scan_chunked,
    selective_scan_reference,
    temporal_sincos,
)
from unisurg.models.strict_load import CheckpointError

FIX = Path(__file__).resolve().parent / "fixtures" / "baselines" / "endomamba"
TOL = 1e-4


def expected():
    return load_file(str(FIX / "expected.safetensors"))


def test_pretraining_checkpoint_matches_official_code():
    e = expected()
    bb = load_backbone(f"endomamba:{FIX / 'endomamba_pretrain_tiny.pth'}")
    assert (bb.kind, bb.embed_dim, bb.patch_size, bb.tubelet_size, bb.img_size) == ("video", 16, 8, 1, 16)
    assert bb.model.config.num_spatial_layers == 2 and bb.model.config.depth == 4
    with torch.no_grad():
        tokens = bb.model(e["input"])
    assert tokens.shape == (2, 3 * 2 * 2, 16) == tuple(e["pretrain_tokens"].shape)
    assert bb.grid(3, 16, 16) == (3, 2, 2)
    assert (tokens - e["pretrain_tokens"]).abs().max().item() <= TOL


def test_chunked_scan_path_matches_official_code(monkeypatch):
    """The CUDA path without mamba_ssm (chunked scan), run here on the CPU, against the same official outputs."""

    monkeypatch.setattr(em, "selective_scan", em.selective_scan_chunked)
    e = expected()
    bb = load_backbone(f"endomamba:{FIX / 'endomamba_pretrain_tiny.pth'}")
    with torch.no_grad():
        tokens = bb.model(e["input"])
    assert (tokens - e["pretrain_tokens"]).abs().max().item() <= TOL


def test_finetuned_layout_with_class_token_matches_official_code():
    e = expected()
    bb = load_backbone(f"endomamba:{FIX / 'endomamba_cls_tiny.pth'}")
    assert bb.model.config.cls_token
    with torch.no_grad():
        frames = bb.model.forward_frames(e["input"])
        tokens = bb.model(e["input"])
    assert (frames - e["cls_hidden"]).abs().max().item() <= TOL
    # tokens: the patch tokens of every frame, class tokens dropped, (t, h, w) order
    assert torch.equal(tokens, frames[:, :, 1:].flatten(1, 2))


def _sd(name):
    return torch.load(FIX / name, weights_only=True)["model"]


def test_other_input_size_resamples_the_position_table():
    bb = load_backbone(f"endomamba:{FIX / 'endomamba_pretrain_tiny.pth'}")
    with torch.no_grad():
        tokens = bb.model(torch.randn(1, 3, 2, 24, 24))
    assert tokens.shape == (1, 2 * 3 * 3, 16) and torch.isfinite(tokens).all()


def test_bare_path_is_recognised():
    assert detect_kind(FIX / "endomamba_pretrain_tiny.pth", "?") == "endomamba"
    assert load_backbone(str(FIX / "endomamba_cls_tiny.pth")).name.startswith("EndoMamba")


def test_missing_or_unexpected_key_fails_naming_it():
    sd = {k[len("encoder."):]: v for k, v in _sd("endomamba_pretrain_tiny.pth").items() if k.startswith("encoder.")}
    broken = dict(sd)
    del broken["layers.3.mixer.dt_proj.bias"]
    with pytest.raises(CheckpointError, match=r"layers\.3\.mixer\.dt_proj\.bias"):
        build_endomamba(broken, source="x.pth")
    extra = dict(sd, **{"layers.1.mixer.bogus": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"layers\.1\.mixer\.bogus"):
        build_endomamba(extra, source="x.pth")
    not_first = dict(sd)
    not_first["layers.3.mixer.A_b_log"] = sd["layers.0.mixer.A_b_log"]
    with pytest.raises(CheckpointError, match="bidirectional layers"):
        build_endomamba(not_first, source="x.pth")


def test_wrong_file_kind_names_the_anchor(tmp_path):
    p = tmp_path / "resnet.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(4, 3, 7, 7)}}, p)
    with pytest.raises(CheckpointError, match=r"layers\.0\.mixer\.in_proj\.weight"):
        load_backbone(f"endomamba:{p}")


def test_selective_scan_reference_matches_naive_float64_recurrence():
    g = torch.Generator().manual_seed(0)
    b, d, n, L = 2, 3, 4, 5
    u, delta, z = (torch.randn(b, d, L, generator=g) for _ in range(3))
    A = -torch.rand(d, n, generator=g) - 0.1
    B, C = torch.randn(b, n, L, generator=g), torch.randn(b, n, L, generator=g)
    D, bias = torch.randn(d, generator=g), torch.randn(d, generator=g)
    out = selective_scan_reference(u, delta, A, B, C, D, z, bias)
    ref = torch.zeros(b, d, L, dtype=torch.float64)
    for bi in range(b):
        for di in range(d):
            h = [0.0] * n
            for t in range(L):
                dt = math.log1p(math.exp(float(delta[bi, di, t] + bias[di])))
                h = [math.exp(dt * float(A[di, k])) * h[k] + dt * float(B[bi, k, t]) * float(u[bi, di, t])
                     for k in range(n)]
                y = sum(h[k] * float(C[bi, k, t]) for k in range(n)) + float(D[di]) * float(u[bi, di, t])
                zz = float(z[bi, di, t])
                ref[bi, di, t] = y * zz / (1 + math.exp(-zz))
    assert (out.double() - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize("chunk", [1, 4, 7, 64])
def test_chunked_scan_equals_the_recurrence(chunk):
    g = torch.Generator().manual_seed(1)
    b, d, n, L = 2, 5, 3, 37
    u, delta, z = (torch.randn(b, d, L, generator=g) for _ in range(3))
    A = -torch.exp(torch.randn(d, n, generator=g))
    B, C = torch.randn(b, n, L, generator=g), torch.randn(b, n, L, generator=g)
    D, bias = torch.randn(d, generator=g), torch.randn(d, generator=g)
    ref = selective_scan_reference(u, delta, A, B, C, D, z, bias)
    out = selective_scan_chunked(u, delta, A, B, C, D, z, bias, chunk=chunk)
    assert (out - ref).abs().max().item() < 1e-5


def test_temporal_positions_are_the_transformer_sinusoids():
    pe = temporal_sincos(5, 6)
    for t in range(5):
        for i in range(3):
            w = t / 10000 ** (2 * i / 6)
            assert abs(pe[t, 2 * i].item() - math.sin(w)) < 1e-6
            assert abs(pe[t, 2 * i + 1].item() - math.cos(w)) < 1e-6
