"""Backbone registry: every spec kind on weights made here, against independent references.

References: the ``transformers`` models themselves (VJEPA2, VideoMAE, DINOv3, ViT, ConvNeXt) on the same
input; a naive float64 ViT forward written below from timm's documented key layout; a float64 ResNet-50
forward written below from torchvision's documented layout; the saved modules for our own checkpoints.
"""

import argparse
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from unisurg.backbones import registry as bbmod
from unisurg.backbones.spec import Backbone, BackboneSpecError, fingerprint_path, parse_spec
from unisurg.backbones.registry import backbone_kinds, detect_kind, load_backbone, register_backbone
from unisurg.backbones.image import FrameByFrame
from unisurg.models.image_vit import resample_pos_grid
from unisurg.models import CheckpointError, EncoderConfig, VideoViT, export_vjepa2, save_checkpoint

torch.set_num_threads(1)

try:
    import transformers  # noqa: F401

    HAVE_HF = True
except Exception:  # noqa: BLE001 - any import failure: skip the HF comparisons
    HAVE_HF = False

needs_hf = pytest.mark.skipif(not HAVE_HF, reason="transformers not importable")


def clip(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def tiny_video_vit(seed, **kw):
    torch.manual_seed(seed)
    cfg = dict(embed_dim=96, depth=2, num_heads=3, name="tiny", **kw)
    return VideoViT(EncoderConfig(**cfg)).eval()


def assert_frozen(bb: Backbone):
    assert not bb.model.training
    assert all(not p.requires_grad for p in bb.model.parameters())


# ---------------------------------------------------------------- spec parsing, registry, errors


def test_parse_spec_prefix_options_fragment(tmp_path):
    p = parse_spec("unisurg:/a/b#encoder?img_size=256&name=x")
    assert (p.prefix, p.argument) == ("unisurg", "/a/b")
    assert p.options == {"img_size": "256", "name": "x", "which": "encoder"}
    p = parse_spec("random:tiny@3?pos_embed=sincos&embed_dim=96")
    assert (p.prefix, p.argument, p.options) == ("random", "tiny@3", {"pos_embed": "sincos", "embed_dim": "96"})
    assert parse_spec("/x/y.pt").prefix is None
    # an existing path that looks like a prefix is a path
    odd = tmp_path / "ab:c"
    odd.write_text("x")
    assert parse_spec(str(odd)).prefix is None
    with pytest.raises(BackboneSpecError, match="given twice"):
        parse_spec("random:tiny?depth=1&depth=2")


def test_unknown_prefix_suggests_nearest_and_lists_kinds():
    with pytest.raises(BackboneSpecError) as e:
        load_backbone("vjepa:/nowhere.pt")
    msg = str(e.value)
    assert "Did you mean 'vjepa2:'" in msg
    for kind in ("unisurg", "vjepa2", "hf-vjepa2", "random", "videomae", "dinov3", "hf-image", "timm-vit", "resnet50"):
        assert kind in msg and kind in backbone_kinds()


def test_missing_files_are_named(tmp_path):
    for spec in (f"unisurg:{tmp_path}/nope", f"vjepa2:{tmp_path}/nope.pt", f"timm-vit:{tmp_path}/nope.pth",
                 f"resnet50:{tmp_path}/nope.pth", f"{tmp_path}/nope.pt"):
        with pytest.raises(FileNotFoundError, match="nope"):
            load_backbone(spec)


def test_register_custom_kind_and_unused_options():
    def toy_loader(arg, opts, *, spec, device, dtype):
        width = opts.take("width", 8, cast=int)
        model = torch.nn.Sequential(torch.nn.Flatten(2), torch.nn.Unflatten(1, (3, 1)))
        return Backbone(name=f"toy-{arg}", spec=spec, model=model, embed_dim=width, num_frames=1, img_size=8,
                        patch_size=1, tubelet_size=1, mean=(0, 0, 0), std=(1, 1, 1), kind="image", fingerprint="0")

    register_backbone("toy", toy_loader, "a test kind")
    try:
        assert backbone_kinds()["toy"] == "a test kind"
        bb = load_backbone("toy:abc?width=5&name=Toy&norm=endovit")
        assert (bb.name, bb.embed_dim, bb.spec) == ("Toy", 5, "toy:abc?width=5&name=Toy&norm=endovit")
        assert bb.mean == (0.3464, 0.2280, 0.2228)
        assert_frozen(bb)
        with pytest.raises(BackboneSpecError, match=r"'widht' \(did you mean 'width'\?\)"):
            load_backbone("toy:abc?widht=5")
        with pytest.raises(BackboneSpecError, match="expected an integer"):
            load_backbone("toy:abc?width=five")
        with pytest.raises(ValueError, match="already registered"):
            register_backbone("toy", lambda *a, **k: None, "another")
        with pytest.raises(ValueError, match="must match"):
            register_backbone("X", toy_loader, "bad prefix")
    finally:
        bbmod._REGISTRY.pop("toy", None)


# ---------------------------------------------------------------- our checkpoints


def test_unisurg_checkpoint_target_online_and_fields(tmp_path):
    online, target = tiny_video_vit(1), tiny_video_vit(2)
    save_checkpoint(tmp_path / "run", encoder=online, target_encoder=target, extra={"img_size": 64, "num_frames": 8})
    x = clip(2, 3, 4, 32, 32)
    bb = load_backbone(f"unisurg:{tmp_path / 'run'}")
    bb_on = load_backbone(f"unisurg:{tmp_path / 'run'}#encoder")
    with torch.no_grad():
        torch.testing.assert_close(bb.model(x), target(x), atol=1e-6, rtol=0)
        torch.testing.assert_close(bb_on.model(x), online(x), atol=1e-6, rtol=0)
    assert (bb.name, bb.kind, bb.embed_dim, bb.patch_size, bb.tubelet_size) == ("UniSurg-tiny", "video", 96, 16, 2)
    assert (bb.img_size, bb.num_frames) == (64, 8)  # from the checkpoint's extra
    assert bb.grid(4, 32, 32) == (2, 2, 2) and bb.model(x).shape == (2, 8, 96)
    assert bb_on.name == "UniSurg-tiny (online)"
    assert bb.mean == (0.485, 0.456, 0.406) and bb.std == (0.229, 0.224, 0.225)
    assert_frozen(bb)
    assert bb.fingerprint != bb_on.fingerprint
    assert load_backbone(f"unisurg:{tmp_path / 'run'}").fingerprint == bb.fingerprint  # stable
    # the .safetensors pair layout, as a bare path, with a common option
    save_checkpoint(tmp_path / "pair.safetensors", encoder=online)
    bb2 = load_backbone(f"{tmp_path / 'pair.safetensors'}?img_size=128")
    assert bb2.img_size == 128 and bb2.num_frames == 64  # no extra: the V-JEPA-family protocol default
    with torch.no_grad():
        torch.testing.assert_close(bb2.model(x), online(x), atol=1e-6, rtol=0)
    assert bb2.fingerprint != bb_on.fingerprint
    with pytest.raises(BackboneSpecError, match="which='predictor' is not one of"):
        load_backbone(f"unisurg:{tmp_path / 'run'}#predictor")
    with pytest.raises(BackboneSpecError, match="unknown option"):
        load_backbone(f"unisurg:{tmp_path / 'run'}?pos=rope")


def test_unisurg_checkpoint_missing_key_fails_loudly(tmp_path):
    save_checkpoint(tmp_path / "run", target_encoder=tiny_video_vit(1))
    wpath = tmp_path / "run" / "weights.safetensors"
    from safetensors import safe_open

    with safe_open(str(wpath), framework="pt") as f:
        meta = f.metadata()
    sd = load_file(str(wpath))
    del sd["target_encoder.blocks.1.mlp.fc2.bias"]
    save_file(sd, str(wpath), metadata=meta)
    with pytest.raises(CheckpointError, match=r"blocks\.1\.mlp\.fc2\.bias"):
        load_backbone(f"unisurg:{tmp_path / 'run'}")


def test_wrong_kind_for_file_suggests_right_prefix(tmp_path):
    save_checkpoint(tmp_path / "run", encoder=tiny_video_vit(1))
    with pytest.raises(BackboneSpecError, match="use 'unisurg:"):
        load_backbone(f"vjepa2:{tmp_path / 'run'}")
    export_vjepa2(tiny_video_vit(1), tmp_path / "o.pt")
    with pytest.raises(BackboneSpecError, match="use 'vjepa2:"):
        load_backbone(f"unisurg:{tmp_path / 'o.pt'}")


# ---------------------------------------------------------------- V-JEPA 2: official file and HF folder


def hf_vjepa2(seed):
    from transformers import VJEPA2Config, VJEPA2Model

    cfg = VJEPA2Config(hidden_size=96, num_attention_heads=3, num_hidden_layers=2, mlp_ratio=4.0, crop_size=32,
                       frames_per_clip=4, patch_size=16, tubelet_size=2, pred_hidden_size=48,
                       pred_num_attention_heads=2, pred_num_hidden_layers=1, pred_num_mask_tokens=2)
    torch.manual_seed(seed)
    model = VJEPA2Model(cfg).eval()
    with torch.no_grad():  # non-trivial norms and biases, so that every mapped tensor matters
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.05)
            elif "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def hf_to_official(hf_sd, prefix="module.backbone."):
    """Official V-JEPA 2 encoder names from HF ones (mapping written for this test from both layouts)."""
    out, qkv = {}, {}
    for k, v in hf_sd.items():
        if not k.startswith("encoder."):
            continue
        k = k[len("encoder."):]
        if k.startswith("embeddings.patch_embeddings.proj."):
            out["patch_embed.proj." + k.split(".")[-1]] = v
        elif k.startswith("layernorm."):
            out["norm." + k.split(".")[-1]] = v
        else:
            _, i, *rest = k.split(".")
            name = ".".join(rest)
            if rest[0] == "attention" and rest[1] in ("query", "key", "value"):
                qkv.setdefault((i, rest[2]), {})[rest[1]] = v
            else:
                out[f"blocks.{i}." + name.replace("attention.proj", "attn.proj")] = v
    for (i, kind), parts in qkv.items():
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return {prefix + k: v.clone() for k, v in out.items()}


@needs_hf
def test_vjepa2_official_pt_matches_transformers(tmp_path):
    target, online = hf_vjepa2(3), hf_vjepa2(4)
    torch.save({"encoder": hf_to_official(online.state_dict()), "target_encoder": hf_to_official(target.state_dict()),
                "epoch": 7}, tmp_path / "vjepa2.pt")
    x = clip(2, 3, 4, 32, 32)
    bb = load_backbone(f"vjepa2:{tmp_path / 'vjepa2.pt'}?num_heads=3")  # width 96 is no V-JEPA preset
    bb_on = load_backbone(f"{tmp_path / 'vjepa2.pt'}#encoder?num_heads=3")  # bare path, online encoder
    with torch.no_grad():
        ref = target(x.transpose(1, 2), skip_predictor=True).last_hidden_state
        ref_on = online(x.transpose(1, 2), skip_predictor=True).last_hidden_state
        torch.testing.assert_close(bb.model(x), ref, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(bb_on.model(x), ref_on, atol=2e-5, rtol=1e-5)
    assert (bb.name, bb.img_size, bb.num_frames, bb.embed_dim) == ("V-JEPA 2 ViT-D96", 256, 64, 96)
    assert_frozen(bb)
    with pytest.raises(CheckpointError, match="num_heads"):
        load_backbone(f"vjepa2:{tmp_path / 'vjepa2.pt'}")


def test_vjepa2_encoder_only_release_file(tmp_path, recwarn):
    enc = tiny_video_vit(5)
    torch.save({"encoder": {"module.backbone." + k: v for k, v in enc.state_dict().items()}}, tmp_path / "r.pt")
    bb = load_backbone(f"vjepa2:{tmp_path / 'r.pt'}?num_heads=3")  # no target_encoder: no warning, 'encoder' used
    assert not [w for w in recwarn if "instead" in str(w.message)]
    x = clip(1, 3, 2, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(bb.model(x), enc(x), atol=1e-6, rtol=0)
    with pytest.warns(UserWarning, match="instead"):  # asked for explicitly: the fallback is reported
        load_backbone(f"vjepa2:{tmp_path / 'r.pt'}#target_encoder?num_heads=3")


def test_vjepa2_exported_file_round_trip_without_transformers(tmp_path):
    enc = tiny_video_vit(5, pos_embed="sincos")
    export_vjepa2(enc, tmp_path / "e.pt", num_frames=4, img_size=32)
    with pytest.warns(UserWarning, match="sin-cos"):
        bb = load_backbone(f"vjepa2:{tmp_path / 'e.pt'}?num_heads=3")
    x = clip(1, 3, 4, 48, 32)
    with torch.no_grad():
        torch.testing.assert_close(bb.model(x), enc(x), atol=1e-6, rtol=0)
    assert bb.model.config.pos_embed == "sincos"


@needs_hf
def test_hf_vjepa2_folder_ours_and_transformers(tmp_path):
    model = hf_vjepa2(6)
    model.save_pretrained(tmp_path / "hf")
    x = clip(2, 3, 4, 32, 32)
    with torch.no_grad():
        ref = model(x.transpose(1, 2), skip_predictor=True).last_hidden_state
        for spec in (f"hf-vjepa2:{tmp_path / 'hf'}", f"hf-vjepa2:{tmp_path / 'hf'}?impl=transformers",
                     str(tmp_path / "hf")):
            bb = load_backbone(spec)
            assert (bb.img_size, bb.num_frames, bb.patch_size, bb.tubelet_size) == (32, 4, 16, 2), spec
            assert bb.grid(4, 32, 32) == (2, 2, 2)
            assert_frozen(bb)
            torch.testing.assert_close(bb.model(x), ref, atol=2e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="crop_size=32"):
            load_backbone(f"hf-vjepa2:{tmp_path / 'hf'}?impl=transformers").model(clip(1, 3, 4, 48, 48))


# ---------------------------------------------------------------- random init


def test_random_backbone_deterministic_and_overrides():
    x = clip(1, 3, 4, 32, 32)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = load_backbone("random:tiny@0")
    assert torch.equal(torch.rand(3), before)  # the global RNG stream is left alone
    b, c = load_backbone("random:tiny@0"), load_backbone("random:tiny@1")
    with torch.no_grad():
        assert torch.equal(a.model(x), b.model(x))
        assert not torch.allclose(a.model(x), c.model(x))
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert load_backbone("random:tiny").fingerprint == a.fingerprint  # seed 0 by default
    assert (a.name, a.embed_dim, a.kind, a.img_size, a.num_frames) == ("random-init tiny", 192, "video", 256, 64)
    assert_frozen(a)
    s = load_backbone("random:tiny@0?pos_embed=sincos&embed_dim=96&depth=2")
    assert (s.embed_dim, s.model.config.pos_embed, len(s.model.blocks)) == (96, "sincos", 2)
    assert s.model(x).shape == (1, 8, 96)
    # same seed, same tensors, different position scheme: the fingerprint still tells them apart
    r1, r2 = load_backbone("random:tiny@0?pos_embed=rope"), load_backbone("random:tiny@0?pos_embed=sincos")
    assert all(torch.equal(p, q) for p, q in zip(r1.model.state_dict().values(), r2.model.state_dict().values()))
    assert r1.fingerprint != r2.fingerprint
    with pytest.raises(BackboneSpecError, match="did you mean 'tiny'"):
        load_backbone("random:tinny")
    with pytest.raises(BackboneSpecError, match="did you mean 'embed_dim'"):
        load_backbone("random:tiny?embed_dims=96")
    with pytest.raises(BackboneSpecError, match="expected an integer"):
        load_backbone("random:tiny?depth=two")


def test_dtype_and_device_placement(tmp_path):
    torch.save(timm_vit_state_dict(1), tmp_path / "vit.pth")
    sd = timm_vit_state_dict(1)
    for spec in ("random:tiny@0?depth=1", f"timm-vit:{tmp_path / 'vit.pth'}?num_heads=2"):
        bb = load_backbone(spec, device="cpu", dtype=torch.bfloat16)
        assert all(p.dtype == torch.bfloat16 for p in bb.model.parameters())
        out = bb.model(clip(1, 3, 2, 32, 32))  # float32 pixels in, cast by the model
        assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    img = clip(3, 32, 32)
    ref = naive_vit(sd, img, 2)
    torch.testing.assert_close(bb.model(img[None, :, None])[0].double(), ref, atol=0.1 * ref.abs().max(), rtol=0)


# ---------------------------------------------------------------- VideoMAE, DINOv3, other HF image models


@needs_hf
@pytest.mark.parametrize("mean_pool", [False, True])
def test_videomae_matches_transformers(tmp_path, mean_pool):
    from transformers import VideoMAEConfig, VideoMAEModel

    cfg = VideoMAEConfig(image_size=32, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=64,
                         num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, use_mean_pooling=mean_pool)
    torch.manual_seed(7)
    model = VideoMAEModel(cfg).eval()
    model.save_pretrained(tmp_path / "vm")
    (tmp_path / "vm" / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.45] * 3, "image_std": [0.225] * 3, "crop_size": {"height": 32, "width": 32}}))
    x = clip(2, 3, 4, 32, 32)
    for spec in (f"videomae:{tmp_path / 'vm'}", str(tmp_path / "vm")):
        bb = load_backbone(spec)
        with torch.no_grad():
            torch.testing.assert_close(bb.model(x), model(pixel_values=x.transpose(1, 2)).last_hidden_state,
                                       atol=1e-5, rtol=1e-5)
        assert (bb.kind, bb.num_frames, bb.img_size, bb.tubelet_size, bb.embed_dim) == ("video", 4, 32, 2, 64)
        assert bb.mean == (0.45, 0.45, 0.45) and bb.name == "VideoMAE ViT-D64"
        assert_frozen(bb)
    with pytest.raises(ValueError, match="4 frames of 32x32"):
        bb.model(clip(1, 3, 6, 32, 32))


def save_dinov3(folder, n_reg=2):
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    cfg = DINOv3ViTConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                          patch_size=8, image_size=32, num_register_tokens=n_reg, layerscale_value=0.5)
    torch.manual_seed(8)
    model = DINOv3ViTModel(cfg).eval()
    with torch.no_grad():
        model.embeddings.register_tokens.normal_()
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.2, 0.25], "size": {"height": 32, "width": 32}}))
    return model


@needs_hf
def test_dinov3_frame_by_frame_matches_transformers(tmp_path):
    model = save_dinov3(tmp_path / "d3")
    x = clip(2, 3, 3, 32, 32)
    bb = load_backbone(f"dinov3:{tmp_path / 'd3'}?chunk=2")  # 6 frames in chunks of 2
    assert (bb.kind, bb.patch_size, bb.tubelet_size, bb.img_size, bb.num_frames) == ("image", 8, 1, 32, 1)
    assert bb.mean == (0.5, 0.4, 0.3) and bb.std == (0.2, 0.2, 0.25) and bb.name == "DINOv3 ViT-D64/8"
    assert bb.grid(3, 32, 32) == (3, 4, 4)
    assert_frozen(bb)
    with torch.no_grad():
        out = bb.model(x)
        assert out.shape == (2, 3 * 16, 64)
        for b in range(2):
            for t in range(3):  # (t, h, w) order: frame t's patches, CLS and the 2 registers dropped
                ref = model(pixel_values=x[b, :, t][None]).last_hidden_state[0, 3:]
                torch.testing.assert_close(out[b, t * 16:(t + 1) * 16], ref, atol=1e-5, rtol=1e-5)
        # any size divisible by the patch (DINOv3 RoPE follows the input)
        assert bb.model(clip(1, 3, 2, 48, 40)).shape == (1, 2 * 30, 64)
    assert detect_kind(tmp_path / "d3", "?") == "dinov3"


@needs_hf
def test_hf_image_vit_and_feature_map_models(tmp_path):
    from transformers import ConvNextConfig, ConvNextModel, ViTConfig, ViTModel

    torch.manual_seed(9)
    vit = ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=96), add_pooling_layer=False).eval()
    vit.save_pretrained(tmp_path / "vit")
    conv = ConvNextModel(ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], image_size=64)).eval()
    conv.save_pretrained(tmp_path / "cnx")
    x = clip(1, 3, 2, 32, 32)
    bb = load_backbone(str(tmp_path / "vit"))  # bare folder -> hf-image
    assert (bb.kind, bb.patch_size, bb.img_size, bb.embed_dim) == ("image", 8, 32, 48)
    with torch.no_grad():
        out = bb.model(x)
        for t in range(2):
            ref = vit(pixel_values=x[:, :, t]).last_hidden_state[:, 1:]  # CLS dropped
            torch.testing.assert_close(out[:, t * 16:(t + 1) * 16], ref, atol=1e-5, rtol=1e-5)
    bc = load_backbone(f"hf-image:{tmp_path / 'cnx'}")
    assert (bc.patch_size, bc.embed_dim, bc.img_size) == (32, 32, 64)
    x = clip(1, 3, 2, 64, 64)
    with torch.no_grad():
        out = bc.model(x)
        for t in range(2):
            ref = conv(pixel_values=x[:, :, t]).last_hidden_state  # [1, 32, 2, 2] map -> raster tokens
            torch.testing.assert_close(out[:, t * 4:(t + 1) * 4], ref.flatten(2).transpose(1, 2), atol=1e-5, rtol=1e-5)
    with pytest.raises(BackboneSpecError, match="not a DINOv3"):
        load_backbone(f"dinov3:{tmp_path / 'vit'}")


@needs_hf
def test_hf_image_refuses_video_folders(tmp_path):
    hf_vjepa2(1).save_pretrained(tmp_path / "v")
    with pytest.raises(BackboneSpecError, match="use 'hf-vjepa2:'"):
        load_backbone(f"hf-image:{tmp_path / 'v'}")


# ---------------------------------------------------------------- timm-format ViT vs a naive float64 forward


def timm_vit_state_dict(seed, *, dim=32, depth=2, patch=8, grid=4, cls=True, n_reg=0, pos_prefix=True,
                        layer_scale=False, hidden=64):
    """Keys as timm's VisionTransformer names them (cls_token, reg_token, pos_embed, patch_embed.proj,
    blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}, norm, head)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, std=0.2: torch.randn(*s, generator=g) * std  # noqa: E731
    n_prefix = int(cls) + n_reg
    sd = {"patch_embed.proj.weight": r(dim, 3, patch, patch, std=0.05), "patch_embed.proj.bias": r(dim),
          "pos_embed": r(1, grid * grid + (n_prefix if pos_prefix else 0), dim)}
    if cls:
        sd["cls_token"] = r(1, 1, dim)
    if n_reg:
        sd["reg_token"] = r(1, n_reg, dim)
    for i in range(depth):
        p = f"blocks.{i}."
        sd.update({p + "norm1.weight": 1 + r(dim), p + "norm1.bias": r(dim),
                   p + "attn.qkv.weight": r(3 * dim, dim), p + "attn.qkv.bias": r(3 * dim),
                   p + "attn.proj.weight": r(dim, dim), p + "attn.proj.bias": r(dim),
                   p + "norm2.weight": 1 + r(dim), p + "norm2.bias": r(dim),
                   p + "mlp.fc1.weight": r(hidden, dim), p + "mlp.fc1.bias": r(hidden),
                   p + "mlp.fc2.weight": r(dim, hidden), p + "mlp.fc2.bias": r(dim)})
        if layer_scale:
            sd[p + "ls1.gamma"], sd[p + "ls2.gamma"] = r(dim, std=0.5), r(dim, std=0.5)
    sd.update({"norm.weight": 1 + r(dim), "norm.bias": r(dim), "head.weight": r(10, dim), "head.bias": r(10)})
    return sd


def naive_layernorm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def naive_vit(sd, img, heads, *, n_prefix=1, pos_prefix=True, eps=1e-6):
    """float64 ViT forward of one image [3, H, W] from a timm state dict: returns patch tokens [Np, D]."""
    sd = {k: v.double() for k, v in sd.items()}
    x = img.double()
    w = sd["patch_embed.proj.weight"]
    d, _, p, _ = w.shape
    gh, gw = x.shape[1] // p, x.shape[2] // p
    tokens = []
    for i in range(gh):
        for j in range(gw):
            patch = x[:, i * p:(i + 1) * p, j * p:(j + 1) * p]
            tokens.append((w * patch).sum(dim=(1, 2, 3)) + sd["patch_embed.proj.bias"])
    t = torch.stack(tokens)
    prefix = []
    if "cls_token" in sd:
        prefix.append(sd["cls_token"][0])
    if "reg_token" in sd:
        prefix.append(sd["reg_token"][0])
    pos = sd["pos_embed"][0]
    if pos_prefix:
        t = torch.cat(prefix + [t]) + pos
    else:
        t = torch.cat(prefix + [t + pos])
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    hd = d // heads
    gelu = lambda z: 0.5 * z * (1 + torch.erf(z / math.sqrt(2)))  # noqa: E731
    for i in range(depth):
        g = lambda name: sd[f"blocks.{i}.{name}"]  # noqa: E731
        h = naive_layernorm(t, g("norm1.weight"), g("norm1.bias"), eps)
        qkv = h @ g("attn.qkv.weight").T + g("attn.qkv.bias")
        q, k, v = qkv[:, :d], qkv[:, d:2 * d], qkv[:, 2 * d:]
        out = torch.zeros_like(h)
        for hh in range(heads):
            sl = slice(hh * hd, (hh + 1) * hd)
            logits = q[:, sl] @ k[:, sl].T / math.sqrt(hd)
            att = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
            att = att / att.sum(dim=1, keepdim=True)
            out[:, sl] = att @ v[:, sl]
        a = out @ g("attn.proj.weight").T + g("attn.proj.bias")
        t = t + (a * g("ls1.gamma") if f"blocks.{i}.ls1.gamma" in sd else a)
        h = naive_layernorm(t, g("norm2.weight"), g("norm2.bias"), eps)
        m = gelu(h @ g("mlp.fc1.weight").T + g("mlp.fc1.bias")) @ g("mlp.fc2.weight").T + g("mlp.fc2.bias")
        t = t + (m * g("ls2.gamma") if f"blocks.{i}.ls2.gamma" in sd else m)
    t = naive_layernorm(t, sd["norm.weight"], sd["norm.bias"], eps)
    return t[n_prefix:]


def test_timm_vit_endovit_style_checkpoint_matches_naive_reference(tmp_path):
    sd = timm_vit_state_dict(10)
    # an MAE / EndoViT training file: weights under "model", decoder entries, and pickled argparse args
    mae = dict(sd, mask_token=torch.zeros(1, 1, 16), **{"decoder_embed.weight": torch.zeros(16, 32),
                                                        "decoder_pred.bias": torch.zeros(8)})
    torch.save({"model": mae, "args": argparse.Namespace(model="mae_vit_base_patch16"), "epoch": 3},
               tmp_path / "endovit.pth")
    bb = load_backbone(f"timm-vit:{tmp_path / 'endovit.pth'}?num_heads=2&norm=endovit&chunk=3")
    assert (bb.kind, bb.embed_dim, bb.patch_size, bb.img_size, bb.tubelet_size) == ("image", 32, 8, 32, 1)
    assert bb.mean == (0.3464, 0.2280, 0.2228) and bb.name == "ViT-D32/8 (endovit)"
    assert_frozen(bb)
    x = clip(2, 3, 2, 32, 32)
    with torch.no_grad():
        out = bb.model(x)
    assert out.shape == (2, 2 * 16, 32)
    for b in range(2):
        for t in range(2):
            ref = naive_vit(sd, x[b, :, t], heads=2)
            torch.testing.assert_close(out[b, t * 16:(t + 1) * 16].double(), ref, atol=2e-5, rtol=1e-5)
    assert detect_kind(tmp_path / "endovit.pth", "?") == "timm-vit"


def test_timm_vit_registers_layerscale_no_embed_class(tmp_path):
    sd = timm_vit_state_dict(11, n_reg=2, pos_prefix=False, layer_scale=True)
    torch.save({"state_dict": {"module.backbone." + k: v for k, v in sd.items()}}, tmp_path / "reg.pt")
    bb = load_backbone(f"timm-vit:{tmp_path / 'reg.pt'}?num_heads=2")
    img = clip(3, 32, 32, seed=4)
    with torch.no_grad():
        out = bb.model(img[None, :, None])
    torch.testing.assert_close(out[0].double(), naive_vit(sd, img, 2, n_prefix=3, pos_prefix=False),
                               atol=2e-5, rtol=1e-5)


def test_timm_vit_arch_heads_and_strict_errors(tmp_path):
    sd = timm_vit_state_dict(12, dim=192, depth=1, patch=16, grid=2, hidden=768)
    torch.save(sd, tmp_path / "t.pth")
    bb = load_backbone(f"timm-vit:{tmp_path / 't.pth'}?arch=vit_tiny_patch16_224")
    assert bb.model.image_model.config.num_heads == 3 and bb.img_size == 224  # from the arch name
    img = clip(3, 32, 32, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(bb.model(img[None, :, None])[0].double(), naive_vit(sd, img, 3),
                                   atol=2e-5, rtol=1e-5)
        assert bb.model(clip(1, 3, 1, 48, 64)).shape == (1, 12, 192)  # positions resized to a 3x4 grid
    with pytest.raises(BackboneSpecError, match="width 768"):
        load_backbone(f"timm-vit:{tmp_path / 't.pth'}?arch=vit_base_patch16_224")
    broken = dict(sd)
    del broken["blocks.0.attn.proj.bias"]
    torch.save(broken, tmp_path / "b.pth")
    with pytest.raises(CheckpointError, match=r"blocks\.0\.attn\.proj\.bias"):
        load_backbone(f"timm-vit:{tmp_path / 'b.pth'}")
    torch.save(dict(sd, **{"blocks.0.attn.extra.weight": torch.zeros(2)}), tmp_path / "u.pth")
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\): blocks\.0\.attn\.extra\.weight"):
        load_backbone(f"timm-vit:{tmp_path / 'u.pth'}")


def test_pos_resample_keeps_constant_tables_and_identity():
    table = torch.full((1, 16, 5), 0.7)
    torch.testing.assert_close(resample_pos_grid(table, (4, 4), (6, 3)), torch.full((1, 18, 5), 0.7))
    rnd = clip(1, 16, 5)
    assert resample_pos_grid(rnd, (4, 4), (4, 4)) is rnd


# ---------------------------------------------------------------- torchvision-format ResNet-50


RESNET50_STAGES = [(3, 64, 256), (4, 128, 512), (6, 256, 1024), (3, 512, 2048)]  # blocks, width, out


def torchvision_resnet50_state_dict(seed):
    """Every key of torchvision's resnet50() state dict, with its shape (He et al. 2016, Table 1; torchvision's
    Bottleneck: conv1 1x1, conv2 3x3 (stride), conv3 1x1, downsample.0 conv / downsample.1 BN in block 0)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def conv(name, cout, cin, k):
        sd[name + ".weight"] = torch.randn(cout, cin, k, k, generator=g) * math.sqrt(2.0 / (cin * k * k))

    def bn(name, c, scale=1.0):
        sd[name + ".weight"] = (0.5 + torch.rand(c, generator=g)) * scale
        sd[name + ".bias"] = torch.randn(c, generator=g) * 0.1
        sd[name + ".running_mean"] = torch.randn(c, generator=g) * 0.1
        sd[name + ".running_var"] = 0.5 + torch.rand(c, generator=g)
        sd[name + ".num_batches_tracked"] = torch.tensor(100)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    cin = 64
    for s, (n, width, out) in enumerate(RESNET50_STAGES, start=1):
        for i in range(n):
            p = f"layer{s}.{i}"
            conv(p + ".conv1", width, cin, 1)
            bn(p + ".bn1", width)
            conv(p + ".conv2", width, width, 3)
            bn(p + ".bn2", width)
            conv(p + ".conv3", out, width, 1)
            bn(p + ".bn3", out, scale=0.3)
            if i == 0:
                conv(p + ".downsample.0", out, cin, 1)
                bn(p + ".downsample.1", out)
            cin = out
    sd["fc.weight"], sd["fc.bias"] = torch.randn(1000, 2048, generator=g) * 0.01, torch.zeros(1000)
    return sd


def naive_resnet50(sd, img):
    """float64 ResNet-50 trunk of images [N, 3, H, W] from a torchvision state dict -> [N, 2048, H/32, W/32]."""
    sd = {k: v.double() for k, v in sd.items()}

    def bn(x, name):
        shape = (1, -1, 1, 1)
        return ((x - sd[name + ".running_mean"].view(shape)) / torch.sqrt(sd[name + ".running_var"].view(shape) + 1e-5)
                * sd[name + ".weight"].view(shape) + sd[name + ".bias"].view(shape))

    x = torch.relu(bn(F.conv2d(img.double(), sd["conv1.weight"], stride=2, padding=3), "bn1"))
    x = F.max_pool2d(x, 3, stride=2, padding=1)
    for s, (n, _, _) in enumerate(RESNET50_STAGES, start=1):
        for i in range(n):
            p = f"layer{s}.{i}"
            stride = 2 if (i == 0 and s > 1) else 1
            y = torch.relu(bn(F.conv2d(x, sd[p + ".conv1.weight"]), p + ".bn1"))
            y = torch.relu(bn(F.conv2d(y, sd[p + ".conv2.weight"], stride=stride, padding=1), p + ".bn2"))
            y = bn(F.conv2d(y, sd[p + ".conv3.weight"]), p + ".bn3")
            short = bn(F.conv2d(x, sd[p + ".downsample.0.weight"], stride=stride), p + ".downsample.1") if i == 0 else x
            x = torch.relu(y + short)
    return x


def test_resnet50_torchvision_layout_matches_reference(tmp_path):
    sd = torchvision_resnet50_state_dict(13)
    # torchvision resnet50().state_dict(): 53 convs + 53 BNs x 5 entries + fc weight/bias = 320 entries
    assert len(sd) == 320 and sum(k.endswith("num_batches_tracked") for k in sd) == 53
    # a GastroNet-style training file: weights under "state_dict", DataParallel prefix
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 1}, tmp_path / "gastronet.pth")
    bb = load_backbone(f"resnet50:{tmp_path / 'gastronet.pth'}")
    assert (bb.kind, bb.embed_dim, bb.patch_size, bb.img_size, bb.name) == ("image", 2048, 32, 224,
                                                                            "ResNet-50 (gastronet)")
    assert_frozen(bb)
    assert bb.grid(2, 64, 96) == (2, 2, 3)
    x = clip(1, 3, 2, 64, 96)
    with torch.no_grad():
        out = bb.model(x)
    assert out.shape == (1, 2 * 6, 2048)
    ref = naive_resnet50(sd, x[0].transpose(0, 1))  # frames as a batch: [2, 2048, 2, 3]
    ref = ref.flatten(2).transpose(1, 2).reshape(1, 12, 2048)  # (t, h, w) order
    scale = ref.abs().max()
    torch.testing.assert_close(out.double() / scale, ref / scale, atol=1e-5, rtol=0)
    assert detect_kind(tmp_path / "gastronet.pth", "?") == "resnet50"


def test_resnet50_strict_keys(tmp_path):
    sd = torchvision_resnet50_state_dict(14)
    no_nbt = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}  # older files lack them
    torch.save(no_nbt, tmp_path / "old.pth")
    load_backbone(f"resnet50:{tmp_path / 'old.pth'}")
    broken = dict(sd)
    del broken["layer3.2.bn2.running_var"]
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=r"layer3\.2\.bn2\.running_var"):
        load_backbone(f"resnet50:{tmp_path / 'broken.pth'}")
    basic = {k: v for k, v in sd.items() if ".conv3." not in k}
    torch.save(basic, tmp_path / "basic.pth")
    with pytest.raises(CheckpointError, match="basic-block"):
        load_backbone(f"resnet50:{tmp_path / 'basic.pth'}")


# ---------------------------------------------------------------- frame order, fingerprints, bare paths


def test_frame_by_frame_order_and_chunks():
    proj = torch.nn.Conv2d(3, 4, 8, 8)
    patchify = torch.nn.Sequential(proj, torch.nn.Flatten(2))

    class Tokens(torch.nn.Module):
        def forward(self, im):
            return patchify(im).transpose(1, 2)

    x = clip(2, 3, 5, 16, 24)
    with torch.no_grad():
        out = FrameByFrame(Tokens(), chunk=3)(x)
        assert out.shape == (2, 5 * 6, 4)
        for b in range(2):
            for t in range(5):
                frame = x[b, :, t]
                for i in range(2):
                    for j in range(3):  # raster order within the frame
                        ref = (proj.weight * frame[:, i * 8:(i + 1) * 8, j * 8:(j + 1) * 8]).sum((1, 2, 3)) + proj.bias
                        torch.testing.assert_close(out[b, t * 6 + i * 3 + j], ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\[B, T, C, H, W\] clip must be permuted"):
        FrameByFrame(Tokens())(x.transpose(1, 2))


def test_fingerprint_follows_file_content(tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save(timm_vit_state_dict(1), a)
    torch.save(timm_vit_state_dict(2), b)
    fa = fingerprint_path(a)
    assert fa == fingerprint_path(a) and fa != fingerprint_path(b)
    st = a.stat()
    data = bytearray(a.read_bytes())
    data[-100] ^= 0xFF  # same size, same mtime, one byte in the last MiB changed
    a.write_bytes(bytes(data))
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert fingerprint_path(a) != fa
    bb1 = load_backbone(f"timm-vit:{b}?num_heads=2")
    assert bb1.fingerprint == fingerprint_path(b)


def test_bare_paths_detect_every_file_kind(tmp_path):
    save_checkpoint(tmp_path / "ours", encoder=tiny_video_vit(1))
    export_vjepa2(tiny_video_vit(1), tmp_path / "official.pt")
    torch.save({"model": timm_vit_state_dict(1)}, tmp_path / "vit.pth")
    rn = {k: v for k, v in torchvision_resnet50_state_dict(1).items()}
    torch.save(rn, tmp_path / "rn.pth")
    expected = {"ours": "unisurg", "official.pt": "vjepa2", "vit.pth": "timm-vit", "rn.pth": "resnet50"}
    for name, kind in expected.items():
        assert detect_kind(tmp_path / name, name) == kind, name
    torch.save({"something": torch.zeros(3)}, tmp_path / "odd.pt")
    with pytest.raises(BackboneSpecError, match="cannot tell what model"):
        load_backbone(str(tmp_path / "odd.pt"))
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(BackboneSpecError, match="neither our checkpoint"):
        load_backbone(str(tmp_path / "emptydir"))
