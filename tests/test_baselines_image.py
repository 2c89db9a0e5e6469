"""Image baselines (SurgeNet, GSViT, SelfSupSurg, GastroNet) against outputs of their official model code.

The fixtures under tests/fixtures/baselines/<family>/ hold tiny random weights saved in each release's key layout
and the official code's output on a fixed input (see the NOTE.md beside them for repository, commit and
configuration). Our loaders must reproduce those outputs (max abs diff <= 1e-4), refuse files with a missing or
foreign key (naming it), and load through the registry.
"""

import json
from pathlib import Path

import pytest
import torch

from unisurg.backbones.gsvit import build_gsvit, gsvit_state_dict
from unisurg.backbones.image import read_weights
from unisurg.backbones.registry import BackboneSpecError, load_backbone
from unisurg.backbones.selfsupsurg import vissl_trunk
from unisurg.backbones.surgenet import build_surgenet, detect_family
from unisurg.models.efficientvit import EfficientViTConfig, relative_offset_index
from unisurg.models.resnet import build_resnet
from unisurg.models.strict_load import CheckpointError

torch.set_num_threads(1)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "baselines"
TOL = 1e-4
PVT_TINY_HEADS = (1, 2, 2, 4)  # the tiny PVT v2 of the fixture (heads are not stored in the weights)


def expected(family: str) -> dict:
    return torch.load(FIXTURES / family / "expected.pt", weights_only=True)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


def frames_as_clip(images: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] images -> a [1, C, N, H, W] clip (frame by frame models see each image as one frame)."""
    return images.transpose(0, 1)[None]


def clip_tokens(expected_tokens: torch.Tensor) -> torch.Tensor:
    """Per-image tokens [N, Np, D] -> the clip layout [1, N * Np, D] in (t, h, w) order."""
    return expected_tokens.reshape(1, -1, expected_tokens.shape[-1])


# ---------------------------------------------------------------- SurgeNet

SURGENET_FILES = {"caformer_surgenet": "caformer", "caformer_imagenet": "caformer", "convnextv2": "convnextv2",
                  "pvtv2": "pvtv2"}


@pytest.mark.parametrize("name", sorted(SURGENET_FILES))
def test_surgenet_matches_official_code(name):
    exp = expected("surgenet")
    obj = read_weights(FIXTURES / "surgenet" / f"{name}.pth")
    family = detect_family(obj, source=name)
    assert family == SURGENET_FILES[name]
    model = build_surgenet(obj, family, source=name, heads=PVT_TINY_HEADS if family == "pvtv2" else None)
    if name == "caformer_surgenet":
        assert not model.config.star_relu  # SurgeNet's CAFormer: ReLU
    if name == "caformer_imagenet":
        assert model.config.star_relu
    with torch.no_grad():
        assert max_diff(model(exp["input"]), exp[name]) <= TOL
        if f"{name}_pooled" in exp:
            assert max_diff(model.pooled(exp["input"]), exp[f"{name}_pooled"]) <= TOL


def _dino_checkpoint(sd: dict, other: dict) -> dict:
    """A DINO training checkpoint around a backbone state dict (teacher bare, student DDP-wrapped)."""
    head = {"head.mlp.0.weight": torch.zeros(4, 4), "head.last_layer.weight_v": torch.zeros(2, 4)}
    return {"teacher": {**{f"backbone.{k}": v for k, v in sd.items()}, **head},
            "student": {**{f"module.backbone.{k}": v for k, v in other.items()},
                        **{f"module.{k}": v for k, v in head.items()}},
            "epoch": 50}


def test_surgenet_registry_teacher_file_and_dino_checkpoint(tmp_path):
    exp = expected("surgenet")
    src = FIXTURES / "surgenet" / "caformer_surgenet.pth"
    bb = load_backbone(f"surgenet:{src}")
    assert (bb.kind, bb.embed_dim, bb.img_size, bb.patch_size, bb.num_frames) == ("image", 16, 224, 32, 1)
    with torch.no_grad():
        assert max_diff(bb.model(frames_as_clip(exp["input"])), clip_tokens(exp["caformer_surgenet"])) <= TOL
    # the full DINO checkpoint: teacher by default, '#student' for the other network
    sd = read_weights(src)
    scrambled = {k: v.flip(0) if v.dim() >= 1 and v.shape[0] > 1 else v for k, v in sd.items()}
    path = tmp_path / "SurgeNet_checkpoint0050.pth"
    torch.save(_dino_checkpoint(sd, scrambled), path)
    with torch.no_grad():
        assert max_diff(load_backbone(f"surgenet:{path}").model(frames_as_clip(exp["input"])),
                        clip_tokens(exp["caformer_surgenet"])) <= TOL
        student = load_backbone(f"surgenet:{path}#student").model(frames_as_clip(exp["input"]))
    assert max_diff(student, clip_tokens(exp["caformer_surgenet"])) > 1e-2
    # a teacher saved as the MultiCropWrapper's own state dict: 'backbone.' prefix, DINO head beside it
    path = tmp_path / "SurgeNet_teacher_wrapper.pth"
    torch.save(_dino_checkpoint(sd, sd)["teacher"], path)
    with torch.no_grad():
        assert max_diff(load_backbone(f"surgenet:{path}").model(frames_as_clip(exp["input"])),
                        clip_tokens(exp["caformer_surgenet"])) <= TOL


def test_surgenet_registry_pvt_heads_and_arch_check():
    exp = expected("surgenet")
    src = FIXTURES / "surgenet" / "pvtv2.pth"
    bb = load_backbone(f"surgenet:{src}?heads=1,2,2,4")
    with torch.no_grad():
        assert max_diff(bb.model(frames_as_clip(exp["input"])), clip_tokens(exp["pvtv2"])) <= TOL
    with pytest.raises(CheckpointError, match="4 stages but 3 head counts"):
        load_backbone(f"surgenet:{src}?heads=1,2,2")
    with pytest.raises(BackboneSpecError, match="arch=pvtv2_b2 means"):
        load_backbone(f"surgenet:{src}?heads=1,2,2,4&arch=pvtv2_b2")
    with pytest.raises(BackboneSpecError, match="arch=caformer_s18 means a CAFormer"):
        load_backbone(f"surgenet:{FIXTURES / 'surgenet' / 'convnextv2.pth'}?arch=caformer_s18")
    with pytest.raises(BackboneSpecError, match="heads= applies to PVT v2 only"):
        load_backbone(f"surgenet:{FIXTURES / 'surgenet' / 'convnextv2.pth'}?heads=1,2,2,4")


@pytest.mark.parametrize("name", ["caformer_surgenet", "convnextv2", "pvtv2"])
def test_surgenet_partial_or_foreign_file_names_the_key(tmp_path, name):
    sd = read_weights(FIXTURES / "surgenet" / f"{name}.pth")
    family = SURGENET_FILES[name]
    heads = PVT_TINY_HEADS if family == "pvtv2" else None
    victim = {"caformer": "stages.3.0.norm2.weight", "convnextv2": "stages.2.1.grn.gamma",
              "pvtv2": "block3.1.mlp.dwconv.dwconv.weight"}[family]
    assert victim in sd
    partial = {k: v for k, v in sd.items() if k != victim}
    with pytest.raises(CheckpointError, match=f"missing key.*{victim}"):
        build_surgenet(partial, family, source="partial.pth", heads=heads)
    foreign = {**sd, "stages.0.0.extra.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"unexpected key.*stages\.0\.0\.extra\.weight"):
        build_surgenet(foreign, family, source="foreign.pth", heads=heads)
    path = tmp_path / "partial.pth"
    torch.save(partial, path)
    with pytest.raises(CheckpointError, match=victim):
        load_backbone(f"surgenet:{path}" + ("?heads=1,2,2,4" if heads else ""))


@pytest.mark.parametrize("name,victim", [("caformer_surgenet", "stages.0.0.mlp.fc1.weight"),
                                          ("caformer_surgenet", "downsample_layers.2.conv.weight"),
                                          ("convnextv2", "stages.1.0.dwconv.weight"),
                                          ("pvtv2", "block2.0.mlp.fc1.weight"),
                                          ("pvtv2", "patch_embed3.proj.weight")])
def test_surgenet_keys_read_for_the_architecture_are_named_when_missing(name, victim):
    sd = read_weights(FIXTURES / "surgenet" / f"{name}.pth")
    del sd[victim]
    with pytest.raises(CheckpointError, match=victim.replace(".", r"\.")):
        build_surgenet(sd, SURGENET_FILES[name], source="x.pth", heads=PVT_TINY_HEADS)


def test_surgenet_rejects_other_models(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 7, 7)}, path)
    with pytest.raises(CheckpointError, match="expected exactly one of the keys"):
        load_backbone(f"surgenet:{path}")


# ---------------------------------------------------------------- GSViT


def gsvit_input(exp: dict) -> torch.Tensor:
    return exp["input_uint8_rgb"].float() / 255


def test_gsvit_matches_official_code():
    exp = expected("gsvit")
    sd, notes = gsvit_state_dict(read_weights(FIXTURES / "gsvit" / "gsvit_tiny.pkl"), source="gsvit_tiny.pkl")
    assert any("decoder" in n for n in notes)
    model = build_gsvit(sd, source="gsvit_tiny.pkl", img_size=128, window=3)
    with torch.no_grad():
        bgr = gsvit_input(exp).flip(1)
        assert max_diff(model(bgr), exp["tokens"]) <= TOL
        # the channel order matters: RGB input to the raw trunk gives other tokens
        assert max_diff(model(gsvit_input(exp)), exp["tokens"]) > 1e-2


def test_gsvit_registry_flips_rgb_to_bgr_and_handles_dataparallel(tmp_path):
    exp = expected("gsvit")
    src = FIXTURES / "gsvit" / "gsvit_tiny.pkl"
    bb = load_backbone(f"gsvit:{src}?resolution=128&window=3")
    assert (bb.mean, bb.std, bb.img_size, bb.patch_size) == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 128, 64)
    assert bb.grid(3, 128, 128) == (3, 2, 2)
    with torch.no_grad():
        assert max_diff(bb.model(frames_as_clip(gsvit_input(exp))), clip_tokens(exp["tokens"])) <= TOL
    path = tmp_path / "GSViT.pkl"
    torch.save({f"module.{k}": v for k, v in read_weights(src).items()}, path)
    with torch.no_grad():
        out = load_backbone(f"gsvit:{path}?resolution=128&window=3").model(frames_as_clip(gsvit_input(exp)))
    assert max_diff(out, clip_tokens(exp["tokens"])) <= TOL


def test_gsvit_wrong_file_names_the_key(tmp_path):
    sd = read_weights(FIXTURES / "gsvit" / "gsvit_tiny.pkl")
    victim = "evit.1.0.mixer.m.attn.attention_biases"
    partial = {k: v for k, v in sd.items() if k != victim}
    path = tmp_path / "partial.pkl"
    torch.save(partial, path)
    with pytest.raises(CheckpointError, match=r"missing key.*blocks1\.0\.mixer\.m\.attn\.attention_biases"):
        load_backbone(f"gsvit:{path}?resolution=128&window=3")
    torch.save({**sd, "evit.7.x": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match=r"evit\.7\.x"):
        load_backbone(f"gsvit:{path}?resolution=128&window=3")
    for victim in ("evit.2.3.dw0.m.c.weight", "evit.2.1.se.fc1.weight", "evit.3.3.mixer.m.attn.attention_bias_idxs"):
        torch.save({k: v for k, v in sd.items() if k != victim}, path)
        with pytest.raises(CheckpointError, match=victim.split(".", 2)[2].replace(".", r"\.")):
            load_backbone(f"gsvit:{path}?resolution=128&window=3")
    # the default (M5 at 224 px, window 7) does not fit a file trained at 128 px / window 3
    with pytest.raises(CheckpointError, match="attention_bias_idxs"):
        load_backbone(f"gsvit:{FIXTURES / 'gsvit' / 'gsvit_tiny.pkl'}")


# ---------------------------------------------------------------- SelfSupSurg


def test_selfsupsurg_matches_reference_and_loads_through_registry():
    exp = expected("selfsupsurg")
    src = FIXTURES / "selfsupsurg" / "model_final_checkpoint_tiny.torch"
    model, _ = build_resnet(vissl_trunk(read_weights(src), source=src.name), source=src.name)
    with torch.no_grad():
        assert max_diff(model(exp["input"]), exp["tokens"]) <= TOL
    bb = load_backbone(f"selfsupsurg:{src}")
    assert (bb.embed_dim, bb.patch_size, bb.img_size) == (128, 32, 224)
    with torch.no_grad():
        assert max_diff(bb.model(frames_as_clip(exp["input"])), clip_tokens(exp["tokens"])) <= TOL


def test_selfsupsurg_wrong_nesting_or_key_is_named(tmp_path):
    src = FIXTURES / "selfsupsurg" / "model_final_checkpoint_tiny.torch"
    ckpt = read_weights(src)
    trunk = ckpt["classy_state_dict"]["base_model"]["model"]["trunk"]
    path = tmp_path / "flat.torch"
    torch.save({k[len("_feature_blocks."):]: v for k, v in trunk.items()}, path)
    with pytest.raises(CheckpointError, match="no key 'classy_state_dict'.*resnet50:FILE"):
        load_backbone(f"selfsupsurg:{path}")
    del ckpt["classy_state_dict"]["base_model"]["model"]["trunk"]
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="no key 'trunk' under classy_state_dict -> base_model -> model"):
        load_backbone(f"selfsupsurg:{path}")
    partial = dict(trunk)
    del partial["_feature_blocks.layer3.0.bn2.running_var"]
    ckpt["classy_state_dict"]["base_model"]["model"]["trunk"] = partial
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"missing key.*layer3\.0\.bn2\.running_var"):
        load_backbone(f"selfsupsurg:{path}")
    ckpt["classy_state_dict"]["base_model"]["model"]["trunk"] = {**trunk, "fc.weight": torch.zeros(2, 2)}
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="'fc.weight' is not under '_feature_blocks.'"):
        load_backbone(f"selfsupsurg:{path}")


# ---------------------------------------------------------------- GastroNet (DINO ViT)


def test_gastronet_dino_checkpoint_matches_official_code():
    exp = expected("gastronet")
    src = FIXTURES / "gastronet" / "dino_checkpoint_tiny.pth"
    bb = load_backbone(f"gastronet:{src}?num_heads=2")
    assert (bb.embed_dim, bb.patch_size, bb.img_size) == (32, 16, 64)
    with torch.no_grad():
        assert max_diff(bb.model(frames_as_clip(exp["input"])), clip_tokens(exp["teacher_tokens"])) <= TOL
        student = load_backbone(f"gastronet:{src}?num_heads=2#student").model(frames_as_clip(exp["input"]))
    assert max_diff(student, clip_tokens(exp["student_tokens"])) <= TOL


def test_gastronet_partial_checkpoint_names_the_key(tmp_path):
    ckpt = read_weights(FIXTURES / "gastronet" / "dino_checkpoint_tiny.pth")
    del ckpt["teacher"]["backbone.blocks.1.attn.qkv.bias"]
    path = tmp_path / "checkpoint.pth"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"missing key.*blocks\.1\.attn\.qkv\.bias"):
        load_backbone(f"gastronet:{path}?num_heads=2")


# ---------------------------------------------------------------- full-size layouts of the real releases


def zeros_like_shapes(shapes: dict) -> dict:
    return {k: torch.zeros(v, dtype=torch.long if k.endswith(("num_batches_tracked", "attention_bias_idxs"))
                           else torch.float32) for k, v in shapes.items()}


@pytest.mark.parametrize("arch", ["caformer_s18", "convnextv2_tiny", "pvtv2_b2"])
def test_surgenet_full_size_release_layout_loads(tmp_path, arch):
    """Every key and shape of the official full-size model (SurgeNet's caformer_s18 / convnextv2_tiny / pvt_v2_b2)
    maps onto ours, and ``?arch=`` accepts it."""
    shapes = json.loads((FIXTURES / "surgenet" / "official_shapes.json").read_text())[arch]
    path = tmp_path / f"{arch}_teacher.pth"
    torch.save(zeros_like_shapes(shapes), path)
    bb = load_backbone(f"surgenet:{path}?arch={arch}")
    assert bb.embed_dim == {"caformer_s18": 512, "convnextv2_tiny": 768, "pvtv2_b2": 512}[arch]
    c = bb.model.image_model.config
    if arch == "pvtv2_b2":
        assert (c.heads, c.mlp_ratios, c.sr_ratios) == ((1, 2, 5, 8), (8, 8, 4, 4), (8, 4, 2, 1))
    if arch == "caformer_s18":
        assert (c.num_heads, c.star_relu) == ((0, 0, 10, 16), False)


def test_gsvit_full_size_m5_layout_loads(tmp_path):
    """Every key and shape of GSViT's autoencoder encoder (EfficientViT-M5 at 224 px) maps onto ours; our relative
    offset index equals the official ``attention_bias_idxs``."""
    ref = json.loads((FIXTURES / "gsvit" / "official_m5_shapes.json").read_text())
    sd = zeros_like_shapes(ref["shapes"])
    (key, idx), = ref["idxs_example"].items()
    assert torch.equal(relative_offset_index(7), torch.tensor(idx))
    sd[key] = torch.tensor(idx)
    sd["decoder.fc.weight"] = torch.zeros(2, 2)
    path = tmp_path / "GSViT.pkl"
    torch.save(sd, path)
    bb = load_backbone(f"gsvit:{path}")
    assert (bb.embed_dim, bb.img_size, bb.patch_size, bb.grid(2, 224, 224)) == (384, 224, 56, (2, 4, 4))
    assert bb.model.image_model.model.config == EfficientViTConfig()
    with torch.no_grad():
        assert bb.model(torch.zeros(1, 3, 1, 224, 224)).shape == (1, 16, 384)


BF16_CASES = {  # spec tail, input key, expected key
    "surgenet/caformer_surgenet.pth": ("surgenet", "", "input", "caformer_surgenet"),
    "surgenet/convnextv2.pth": ("surgenet", "", "input", "convnextv2"),
    "surgenet/pvtv2.pth": ("surgenet", "?heads=1,2,2,4", "input", "pvtv2"),
    "gsvit/gsvit_tiny.pkl": ("gsvit", "?resolution=128&window=3", "input_uint8_rgb", "tokens"),
    "selfsupsurg/model_final_checkpoint_tiny.torch": ("selfsupsurg", "", "input", "tokens"),
    "gastronet/dino_checkpoint_tiny.pth": ("gastronet", "?num_heads=2", "input", "teacher_tokens"),
}


@pytest.mark.parametrize("file", sorted(BF16_CASES))
def test_bfloat16_through_the_registry(file):
    """``load_backbone(dtype=bfloat16)`` runs every kind in bf16. The random GSViT fixture is ill-conditioned
    (rounding its weights to bf16 alone moves its fp32 output by ~7%), so only shape and finiteness are checked
    there; the others stay within 5% (relative L2) of the official fp32 output."""
    kind, opts, in_key, out_key = BF16_CASES[file]
    exp = expected(file.split("/")[0])
    x = gsvit_input(exp) if in_key == "input_uint8_rgb" else exp[in_key]
    bb = load_backbone(f"{kind}:{FIXTURES / file}{opts}", dtype=torch.bfloat16)
    with torch.no_grad():
        y = bb.model(frames_as_clip(x).bfloat16())
    ref = clip_tokens(exp[out_key])
    assert y.dtype == torch.bfloat16 and y.shape == ref.shape and torch.isfinite(y).all()
    if kind != "gsvit":
        assert ((y.float() - ref).norm() / ref.norm()).item() < 0.05
