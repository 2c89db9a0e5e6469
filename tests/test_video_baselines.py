"""Video baselines in their official checkpoint layouts, against the official model code's outputs.

The fixtures under ``tests/fixtures/baselines/<family>/`` hold tiny random weights saved in each release's
layout and the output of the official model code for a fixed input (``source.json`` names repository,
commit, configuration). The backbones are loaded through the registry (``load_backbone(spec)``, the path
``unisurg bench --backbone SPEC`` takes) and must reproduce those outputs to 1e-4.
"""

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import bench_cli
from unisurg.backbones.registry import BackboneSpecError, backbone_kinds, detect_kind, load_backbone
from unisurg.models.strict_load import CheckpointError
from unisurg.models.videomae_native import SegmentedVideoEncoder, sinusoid_table

torch.set_num_threads(1)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "baselines"
TOL = 1e-4


def fixed_clip(shape) -> torch.Tensor:
    """The fixtures' input: x[i] = sin(0.37 i) + 0.5 cos(0.11 i) over the flat index (float64, then float32)."""
    i = torch.arange(math.prod(shape), dtype=torch.float64)
    return (torch.sin(0.37 * i) + 0.5 * torch.cos(0.11 * i)).reshape(shape).float()


def expected(family: str) -> dict:
    return torch.load(FIXTURES / family / "expected.pt", weights_only=True)


def weights(family: str) -> Path:
    return FIXTURES / family / "weights.pth"


def run(spec: str, x: torch.Tensor) -> torch.Tensor:
    bb = load_backbone(spec)
    with torch.no_grad():
        return bb.model(x)


def hwt_to_thw(tokens: torch.Tensor, t: int, hp: int, wp: int) -> torch.Tensor:
    """Official TimeSformer order (h, w, t) -> ours (t, h, w)."""
    b, _, d = tokens.shape
    return tokens.reshape(b, hp, wp, t, d).permute(0, 3, 1, 2, 4).reshape(b, t * hp * wp, d)


def test_fixtures_name_their_source():
    for family in ("endofm", "videomaev2", "videomaev2_layerscale", "surgrec_mae", "internvideo2"):
        meta = json.loads((FIXTURES / family / "source.json").read_text())
        assert meta["repository"] and meta["commit"] and meta["configuration"]
        assert (FIXTURES / family / "weights.pth").stat().st_size < 1 << 20


def test_kinds_are_registered():
    assert {"endofm", "videomaev2", "surgrec-mae", "internvideo2"} <= set(backbone_kinds())


# ---------------------------------------------------------------- Endo-FM


@pytest.mark.parametrize("tag", ["native", "resized"])
def test_endofm_matches_official_timesformer(tag):
    e = expected("endofm")
    shape = tuple(e[f"{tag}_input_shape"].tolist())
    b, _, t, h, w = shape
    ref = hwt_to_thw(e[f"{tag}_tokens_hwt"], t, h // 8, w // 8)
    out = run(f"endofm:{weights('endofm')}?num_heads=4", fixed_clip(shape))
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() <= TOL


def test_endofm_backbone_record():
    bb = load_backbone(f"endofm:{weights('endofm')}?num_heads=4")
    assert (bb.num_frames, bb.img_size, bb.patch_size, bb.tubelet_size) == (8, 224, 8, 1)
    assert bb.mean == (0.45, 0.45, 0.45) and bb.std == (0.225, 0.225, 0.225)
    assert bb.grid(8, 32, 32) == (8, 4, 4) and bb.kind == "video"


def test_endofm_takes_the_teacher(tmp_path):
    obj = torch.load(weights("endofm"), weights_only=True)
    obj["student"] = {k: v + 1.0 for k, v in obj["student"].items()}  # a different student must not be used
    p = tmp_path / "endo_fm.pth"
    torch.save(obj, p)
    e = expected("endofm")
    shape = tuple(e["native_input_shape"].tolist())
    ref = hwt_to_thw(e["native_tokens_hwt"], shape[2], 4, 4)
    assert (run(f"endofm:{p}?num_heads=4", fixed_clip(shape)) - ref).abs().max().item() <= TOL


def test_endofm_partial_file_names_the_key(tmp_path):
    obj = torch.load(weights("endofm"), weights_only=True)
    del obj["teacher"]["backbone.blocks.1.temporal_fc.weight"]
    p = tmp_path / "partial.pth"
    torch.save(obj, p)
    with pytest.raises(CheckpointError, match=r"blocks\.1\.temporal_fc\.weight"):
        load_backbone(f"endofm:{p}?num_heads=4")


def test_endofm_unexpected_key_is_named(tmp_path):
    obj = torch.load(weights("endofm"), weights_only=True)
    obj["teacher"]["backbone.blocks.0.attn.extra"] = torch.zeros(3)
    p = tmp_path / "extra.pth"
    torch.save(obj, p)
    with pytest.raises(CheckpointError, match=r"blocks\.0\.attn\.extra"):
        load_backbone(f"endofm:{p}?num_heads=4")


# ---------------------------------------------------------------- VideoMAE V2 / SurgRec-MAE


@pytest.mark.parametrize("family", ["videomaev2", "videomaev2_layerscale"])
def test_videomaev2_matches_official_with_surgmotion_segments(family):
    e = expected(family)
    x = fixed_clip(tuple(e["input_shape"].tolist()))
    out = run(f"videomaev2:{weights(family)}?num_heads=4&segment_frames=4", x)
    assert out.shape == e["tokens"].shape
    assert (out - e["tokens"]).abs().max().item() <= TOL


def test_videomaev2_hf_folder_layout(tmp_path):
    """OpenGVLab/VideoMAEv2-* on the Hub: config.json with model_config, weights under 'model.'."""
    sd = torch.load(weights("videomaev2"), weights_only=True)["model"]
    save_file({f"model.{k}": v.contiguous() for k, v in sd.items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"model_config": {"embed_dim": 32, "depth": 2, "num_heads": 4}}))
    e = expected("videomaev2")
    out = run(f"videomaev2:{tmp_path}?segment_frames=4", fixed_clip(tuple(e["input_shape"].tolist())))
    assert (out - e["tokens"]).abs().max().item() <= TOL


def test_videomaev2_ddp_prefix_in_module_entry(tmp_path):
    sd = torch.load(weights("videomaev2"), weights_only=True)["model"]
    p = tmp_path / "ddp.pth"
    torch.save({"module": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, p)
    e = expected("videomaev2")
    out = run(f"videomaev2:{p}?num_heads=4&segment_frames=4", fixed_clip(tuple(e["input_shape"].tolist())))
    assert (out - e["tokens"]).abs().max().item() <= TOL


def test_videomaev2_backbone_record_is_surgmotion_protocol():
    bb = load_backbone(f"videomaev2:{weights('videomaev2')}?num_heads=4")
    assert (bb.num_frames, bb.img_size, bb.tubelet_size) == (64, 224, 2)
    assert bb.model.segment_frames == 16
    assert bb.grid(64, 224, 224) == (32, 28, 28)


def test_surgrec_mae_matches_official_pretraining_encoder():
    e = expected("surgrec_mae")
    x = fixed_clip(tuple(e["input_shape"].tolist()))
    bb = load_backbone(f"surgrec-mae:{weights('surgrec_mae')}?num_heads=4")
    assert (bb.num_frames, bb.img_size) == (16, 224)
    with torch.no_grad():
        out = bb.model(x)
    assert (out - e["tokens"]).abs().max().item() <= TOL


def test_surgrec_mae_partial_file_names_the_key(tmp_path):
    obj = torch.load(weights("surgrec_mae"), weights_only=True)
    del obj["model"]["encoder.blocks.1.attn.v_bias"]
    p = tmp_path / "partial.pth"
    torch.save(obj, p)
    with pytest.raises(CheckpointError, match=r"blocks\.1\.attn\.v_bias"):
        load_backbone(f"surgrec-mae:{p}?num_heads=4")


def test_videomaev2_shape_mismatch_is_named(tmp_path):
    obj = torch.load(weights("videomaev2"), weights_only=True)
    obj["model"]["blocks.0.attn.q_bias"] = torch.zeros(31)
    p = tmp_path / "bad.pth"
    torch.save(obj, p)
    with pytest.raises(CheckpointError, match=r"blocks\.0\.attn\.q_bias"):
        load_backbone(f"videomaev2:{p}?num_heads=4")


def test_wrong_family_is_refused():
    with pytest.raises(CheckpointError, match="3D tubelet"):
        load_backbone(f"videomaev2:{weights('endofm')}?num_heads=4")
    with pytest.raises(CheckpointError, match="2D patch"):
        load_backbone(f"endofm:{weights('surgrec_mae')}?num_heads=4")


def test_pickled_code_is_not_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    p = tmp_path / "evil.pth"
    torch.save({"model": Evil()}, p)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_backbone(f"surgrec-mae:{p}")


def test_unknown_option_is_refused():
    with pytest.raises(BackboneSpecError, match="segment_frame"):
        load_backbone(f"videomaev2:{weights('videomaev2')}?num_heads=4&segment_frame=4")


def test_segments_must_divide_the_clip():
    enc = SegmentedVideoEncoder(torch.nn.Identity(), 4)
    with pytest.raises(ValueError, match="multiple of 4"):
        enc(torch.zeros(1, 3, 6, 8, 8))


# ---------------------------------------------------------------- InternVideo2

IV2 = f"internvideo2:{weights('internvideo2')}?num_heads=4&pos_frames=4"


@pytest.mark.parametrize("gelu", ["exact", "tanh"])
def test_internvideo2_matches_official(gelu):
    """exact: the official pure-PyTorch path; tanh: the same with flash-attn FusedMLP's GELU approximation."""
    e = expected("internvideo2")
    x = fixed_clip(tuple(e["input_shape"].tolist()))
    out = run(f"{IV2}&gelu={gelu}", x)
    assert out.shape == e[f"tokens_{gelu}_gelu"].shape
    assert (out - e[f"tokens_{gelu}_gelu"]).abs().max().item() <= TOL
    other = "tanh" if gelu == "exact" else "exact"
    assert (out - e[f"tokens_{other}_gelu"]).abs().max().item() > 10 * TOL  # the fixture tells the two apart


def test_internvideo2_backbone_record_and_segments():
    bb = load_backbone(IV2)
    assert (bb.num_frames, bb.img_size, bb.patch_size, bb.tubelet_size) == (4, 28, 14, 1)
    e = expected("internvideo2")
    x = fixed_clip(tuple(e["input_shape"].tolist()))
    with torch.no_grad():
        two = bb.model(torch.cat((x, x.flip(2)), dim=2))  # 8 frames -> 2 forwards of 4
        one = bb.model(x.flip(2))
    assert two.shape == (2, 32, 32) and bb.grid(8, 28, 28) == (8, 2, 2)
    assert torch.allclose(two[:, :16], e["tokens_tanh_gelu"], atol=TOL)
    assert torch.allclose(two[:, 16:], one, atol=TOL)
    with pytest.raises(ValueError, match="pos_embed"):
        bb.model(torch.zeros(1, 3, 4, 42, 42))


def test_internvideo2_partial_file_names_the_key(tmp_path):
    obj = torch.load(weights("internvideo2"), weights_only=True)
    del obj["module"]["vision_encoder.blocks.0.attn.k_norm.weight"]
    p = tmp_path / "partial.pt"
    torch.save(obj, p)
    with pytest.raises(CheckpointError, match=r"blocks\.0\.attn\.k_norm\.weight"):
        load_backbone(f"internvideo2:{p}?num_heads=4&pos_frames=4")


def test_internvideo2_picks_the_vision_encoder_among_towers(tmp_path):
    obj = torch.load(weights("internvideo2"), weights_only=True)
    obj["module"]["clip_teacher.patch_embed.proj.weight"] = torch.zeros(8, 3, 1, 14, 14)  # another tower
    p = tmp_path / "stage2.pt"
    torch.save(obj, p)
    e = expected("internvideo2")
    out = run(f"internvideo2:{p}?num_heads=4&pos_frames=4", fixed_clip(tuple(e["input_shape"].tolist())))
    assert (out - e["tokens_tanh_gelu"]).abs().max().item() <= TOL


def test_internvideo2_pos_frames_must_fit():
    with pytest.raises(CheckpointError, match="pos_frames"):
        load_backbone(f"internvideo2:{weights('internvideo2')}?num_heads=4")  # 16 entries: not a 224 px grid
    with pytest.raises(CheckpointError, match="square grid"):
        load_backbone(f"internvideo2:{weights('internvideo2')}?num_heads=4&pos_frames=3")


@pytest.mark.parametrize("family,kind", [("endofm", "endofm"), ("videomaev2", "videomaev2"),
                                         ("surgrec_mae", "videomaev2"), ("internvideo2", "internvideo2")])
def test_bare_paths_are_recognised(family, kind):
    assert detect_kind(weights(family), str(weights(family))) == kind


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from unisurg.synth.generate import generate_dataset

    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, n_videos=3, seconds=12, height=64, width=96, fps=5, seed=0, progress=False)
    return root


@pytest.mark.parametrize("spec,extra", [
    (f"endofm:{weights('endofm')}?num_heads=4", []),
    (f"videomaev2:{weights('videomaev2')}?num_heads=4&segment_frames=4", []),
    (f"surgrec-mae:{weights('surgrec_mae')}?num_heads=4", []),
    (f"{IV2}", ["clip.res=28"]),
])
def test_unisurg_bench_runs_each_kind(spec, extra, synth, tmp_path):
    """``unisurg bench --backbone SPEC`` end to end (tiny preset: 4-frame clips of 32 px)."""
    out = tmp_path / "out"
    rc = bench_cli("bench", "--backbone", spec, "--dataset", "synthetic", "--root", str(synth), "--out", str(out),
                   "--config", "tiny", f"cache_dir={tmp_path / 'cache'}", "--quiet", "report.bootstrap_n=20", *extra)
    assert rc == 0
    meta = json.loads((out / "results.json").read_text())
    assert spec in json.dumps(meta)


@pytest.mark.parametrize("spec,family", [
    (f"endofm:{weights('endofm')}?num_heads=4", "endofm"),
    (f"videomaev2:{weights('videomaev2')}?num_heads=4&segment_frames=4", "videomaev2"),
    (IV2, "internvideo2"),
])
def test_bf16_runs_close_to_the_reference(spec, family):
    """The benchmark runs backbones in bf16 on GPUs: same tokens up to bf16 rounding (2-3 significant digits)."""
    e = expected(family)
    if family == "endofm":
        shape = tuple(e["native_input_shape"].tolist())
        ref = hwt_to_thw(e["native_tokens_hwt"], shape[2], 4, 4)
    else:
        shape = tuple(e["input_shape"].tolist())
        ref = e["tokens"] if "tokens" in e else e["tokens_tanh_gelu"]
    bb = load_backbone(spec, dtype=torch.bfloat16)
    with torch.no_grad():
        out = bb.model(fixed_clip(shape).bfloat16())
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() <= 0.05 * ref.abs().max()


def test_sinusoid_table_matches_the_formula():
    """Independent float64 loop over VideoMAE's get_sinusoid_encoding_table formula."""
    n, d = 5, 6
    ref = torch.empty(n, d, dtype=torch.float64)
    for p in range(n):
        for j in range(d):
            angle = p / 10000 ** (2 * (j // 2) / d)
            ref[p, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    assert torch.allclose(sinusoid_table(n, d).double(), ref, atol=1e-7)
