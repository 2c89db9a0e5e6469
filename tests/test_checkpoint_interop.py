"""Checkpoints: our format round trip, strict errors, official V-JEPA 2 files and HF VJEPA2 weights.

Official-format files are built here with random tiny weights; outputs are compared with a naive
float64 forward written in this file from the state dict, and (when ``transformers`` is installed)
with ``transformers.VJEPA2Model`` loaded through this file's own key mapping.
"""

import cmath
import json
import math
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from unisurg.models import (
    CheckpointError,
    EncoderConfig,
    VideoViT,
    build_predictor,
    export_vjepa2,
    load_encoder,
    load_predictor,
    save_checkpoint,
    save_encoder,
)

torch.set_num_threads(1)

try:
    import transformers  # noqa: F401

    HAVE_HF = True
except Exception:  # noqa: BLE001 - any import failure means: skip the HF comparisons
    HAVE_HF = False

D, HEADS, DEPTH, HIDDEN = 96, 3, 2, 384  # head dim 32: 3 RoPE segments of 10 channels + 2 unrotated
X = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))  # grid (2, 2, 2)


# ---------------------------------------------------------------- an official-format checkpoint


def official_encoder_sd(seed=0, pos_embed=None):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.1  # noqa: E731
    sd = {"patch_embed.proj.weight": r(D, 3, 2, 16, 16), "patch_embed.proj.bias": r(D)}
    if pos_embed is not None:
        sd["pos_embed"] = pos_embed
    for i in range(DEPTH):
        p = f"blocks.{i}."
        sd.update({
            p + "norm1.weight": 1 + r(D), p + "norm1.bias": r(D),
            p + "attn.qkv.weight": r(3 * D, D), p + "attn.qkv.bias": r(3 * D),
            p + "attn.proj.weight": r(D, D), p + "attn.proj.bias": r(D),
            p + "norm2.weight": 1 + r(D), p + "norm2.bias": r(D),
            p + "mlp.fc1.weight": r(HIDDEN, D), p + "mlp.fc1.bias": r(HIDDEN),
            p + "mlp.fc2.weight": r(D, HIDDEN), p + "mlp.fc2.bias": r(D),
        })
    sd["norm.weight"], sd["norm.bias"] = 1 + r(D), r(D)
    return sd


PD, PHEADS, PDEPTH = 48, 3, 2  # predictor head dim 16


def official_predictor_sd(seed=5, n_mask_tokens=2):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.1  # noqa: E731
    sd = {"predictor_embed.weight": r(PD, D), "predictor_embed.bias": r(PD)}
    for i in range(n_mask_tokens):
        sd[f"mask_tokens.{i}"] = r(1, 1, PD)
    for i in range(PDEPTH):
        p = f"predictor_blocks.{i}."
        sd.update({
            p + "norm1.weight": 1 + r(PD), p + "norm1.bias": r(PD),
            p + "attn.qkv.weight": r(3 * PD, PD), p + "attn.qkv.bias": r(3 * PD),
            p + "attn.proj.weight": r(PD, PD), p + "attn.proj.bias": r(PD),
            p + "norm2.weight": 1 + r(PD), p + "norm2.bias": r(PD),
            p + "mlp.fc1.weight": r(4 * PD, PD), p + "mlp.fc1.bias": r(4 * PD),
            p + "mlp.fc2.weight": r(PD, 4 * PD), p + "mlp.fc2.bias": r(PD),
        })
    sd.update({"predictor_norm.weight": 1 + r(PD), "predictor_norm.bias": r(PD),
               "predictor_proj.weight": r(D, PD), "predictor_proj.bias": r(D)})
    return sd


def with_prefix(sd, prefix="module.backbone."):
    return {prefix + k: v for k, v in sd.items()}


def save_official(path, enc, target=None, pred=None):
    obj = {"encoder": with_prefix(enc), "target_encoder": with_prefix(target if target is not None else enc),
           "epoch": 3, "opt": {"state": {}, "param_groups": [{"lr": 1e-4}]}, "scaler": None}
    if pred is not None:
        obj["predictor"] = with_prefix(pred)
    torch.save(obj, path)
    return path


# ---------------------------------------------------------------- naive float64 reference forward


def naive_sincos_table(dim, grid):
    parts = [dim // 2, dim // 4, dim // 4]
    rows = []
    for t in range(grid[0]):
        for h in range(grid[1]):
            for w in range(grid[2]):
                row = []
                for p, d in zip((t, h, w), parts):
                    row += [math.sin(p / 10000 ** (k / (d // 2))) for k in range(d // 2)]
                    row += [math.cos(p / 10000 ** (k / (d // 2))) for k in range(d // 2)]
                rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def rope_vec(vec, pos, hd):
    """V-JEPA 2 RoPE of one head vector; channel l of an axis segment turns by pos * w_(l mod half)."""
    a = 2 * ((hd // 3) // 2)
    half = a // 2
    out = list(vec)
    for axis, p in enumerate(pos):
        for i in range(half):
            c0, c1 = axis * a + 2 * i, axis * a + 2 * i + 1
            z = complex(vec[c0], vec[c1])
            out[c0] = (z * cmath.exp(1j * p * 10000 ** (-((2 * i) % half) / half))).real
            out[c1] = (z * cmath.exp(1j * p * 10000 ** (-((2 * i + 1) % half) / half))).imag
    return out


def layer_norm(x, w, b, eps=1e-6):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def naive_blocks(h, sd, prefix, depth, heads, positions, rope):
    """Pre-norm blocks, float64, explicit softmax; ``positions`` = (t, h, w) per token."""
    n, dim = h.shape[1], h.shape[2]
    hd = dim // heads
    for i in range(depth):
        p = f"{prefix}{i}."
        y = layer_norm(h, sd[p + "norm1.weight"], sd[p + "norm1.bias"])
        qkv = y @ sd[p + "attn.qkv.weight"].T + sd[p + "attn.qkv.bias"]
        q, k, v = (qkv[..., j * dim:(j + 1) * dim].reshape(h.shape[0], n, heads, hd) for j in range(3))
        if rope:
            q, k = q.clone(), k.clone()
            for b in range(h.shape[0]):
                for j in range(n):
                    for hh in range(heads):
                        q[b, j, hh] = torch.tensor(rope_vec(q[b, j, hh].tolist(), positions[b][j], hd))
                        k[b, j, hh] = torch.tensor(rope_vec(k[b, j, hh].tolist(), positions[b][j], hd))
        scores = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(hd)
        att = torch.exp(scores - scores.amax(-1, keepdim=True))
        att = att / att.sum(-1, keepdim=True)
        o = torch.einsum("bhij,bjhd->bihd", att, v).reshape(h.shape[0], n, dim)
        h = h + o @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        y = layer_norm(h, sd[p + "norm2.weight"], sd[p + "norm2.bias"])
        y = y @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"]
        y = 0.5 * y * (1 + torch.erf(y / math.sqrt(2)))
        h = h + y @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
    return h


def thw(n, grid):
    t, s = divmod(n, grid[1] * grid[2])
    return (t, *divmod(s, grid[2]))


def naive_encoder(sd, x, rope=True):
    sd = {k: v.double() for k, v in sd.items()}
    b, c, t, hh, ww = x.shape
    grid = (t // 2, hh // 16, ww // 16)
    n = grid[0] * grid[1] * grid[2]
    patches = x.double().reshape(b, c, grid[0], 2, grid[1], 16, grid[2], 16).permute(0, 2, 4, 6, 1, 3, 5, 7)
    tokens = patches.reshape(b, n, -1) @ sd["patch_embed.proj.weight"].reshape(D, -1).T + sd["patch_embed.proj.bias"]
    if not rope:
        tokens = tokens + sd["pos_embed"].reshape(n, D)
    positions = [[thw(j, grid) for j in range(n)]] * b
    h = naive_blocks(tokens, sd, "blocks.", DEPTH, HEADS, positions, rope)
    return layer_norm(h, sd["norm.weight"], sd["norm.bias"])


# ---------------------------------------------------------------- HF mapping written for this test


def to_hf(enc_sd, pred_sd=None):
    out = {}
    for k, v in enc_sd.items():
        if k == "pos_embed":
            continue
        k2 = k.replace("patch_embed.", "encoder.embeddings.patch_embeddings.").replace("blocks.", "encoder.layer.")
        if k2.startswith("norm."):
            k2 = "encoder.layernorm." + k2[5:]
        if ".attn.qkv." in k2:
            q, kk, vv = v.chunk(3, dim=0)
            base, kind = k2.split(".attn.qkv.")
            for name, part in (("query", q), ("key", kk), ("value", vv)):
                out[f"{base}.attention.{name}.{kind}"] = part
            continue
        out[k2.replace(".attn.proj.", ".attention.proj.")] = v
    for k, v in (pred_sd or {}).items():
        if k.startswith("mask_tokens."):
            continue
        k2 = k.replace("predictor_blocks.", "predictor.layer.").replace("predictor_embed.",
                                                                         "predictor.embeddings.predictor_embeddings.")
        k2 = k2.replace("predictor_norm.", "predictor.layernorm.").replace("predictor_proj.", "predictor.proj.")
        if ".attn.qkv." in k2:
            base, kind = k2.split(".attn.qkv.")
            for name, part in zip(("query", "key", "value"), v.chunk(3, dim=0)):
                out[f"{base}.attention.{name}.{kind}"] = part
            continue
        out[k2.replace(".attn.proj.", ".attention.proj.")] = v
    if pred_sd:
        toks = sorted((k for k in pred_sd if k.startswith("mask_tokens.")), key=lambda s: int(s.split(".")[1]))
        out["predictor.embeddings.mask_tokens"] = torch.stack([pred_sd[k] for k in toks])
    return out


def hf_model(seed=None):
    from transformers import VJEPA2Config, VJEPA2Model

    cfg = VJEPA2Config(hidden_size=D, num_attention_heads=HEADS, num_hidden_layers=DEPTH, mlp_ratio=4.0,
                       crop_size=32, frames_per_clip=4, patch_size=16, tubelet_size=2, pred_hidden_size=PD,
                       pred_num_attention_heads=PHEADS, pred_num_hidden_layers=PDEPTH, pred_num_mask_tokens=2)
    if seed is not None:
        torch.manual_seed(seed)
    return VJEPA2Model(cfg).eval()


# ---------------------------------------------------------------- our format


def tiny_encoder(pos="rope", seed=0):
    torch.manual_seed(seed)
    return VideoViT(EncoderConfig(embed_dim=D, depth=DEPTH, num_heads=HEADS, pos_embed=pos, name="t")).eval()


@pytest.mark.parametrize("layout", ["dir", "pair"])
def test_our_format_round_trip(tmp_path, layout):
    enc = tiny_encoder("sincos")
    path = tmp_path / ("ckpt" if layout == "dir" else "enc.safetensors")
    save_encoder(enc, path)
    with pytest.warns(UserWarning, match="no 'target_encoder'"):
        back = load_encoder(path)
    assert back.config == enc.config and back.load_info["format"] == "unisurg"
    with torch.no_grad():
        torch.testing.assert_close(back(X), enc(X), atol=0, rtol=0)
    cfg = json.loads(((path / "unisurg.json") if layout == "dir" else path.with_suffix(".json")).read_text())
    assert cfg["components"]["encoder"]["config"]["pos_embed"] == "sincos" and cfg["unisurg_version"]


def test_our_format_components_and_self_describing_weights(tmp_path):
    enc, tgt = tiny_encoder(seed=1), tiny_encoder(seed=2)
    pred = build_predictor(enc, predictor_dim=PD, depth=1, num_heads=PHEADS).eval()
    path = save_checkpoint(tmp_path / "all.safetensors", encoder=enc, target_encoder=tgt, predictor=pred)
    path.with_suffix(".json").unlink()  # the config embedded in the safetensors metadata suffices
    with torch.no_grad():
        torch.testing.assert_close(load_encoder(path)(X), tgt(X), atol=0, rtol=0)
        torch.testing.assert_close(load_encoder(path, which="encoder")(X), enc(X), atol=0, rtol=0)
    assert load_predictor(path).config == pred.config
    keys = load_file(str(path))
    assert {k.split(".")[0] for k in keys} == {"encoder", "target_encoder", "predictor"}


def test_our_format_strict_errors_name_keys(tmp_path):
    enc = tiny_encoder()
    path = save_encoder(enc, tmp_path / "e.safetensors")
    good = load_file(str(path))
    meta_json = path.with_suffix(".json").read_text()

    def rewrite(tensors):
        save_file(tensors, str(path))
        path.with_suffix(".json").write_text(meta_json)

    t = dict(good)
    del t["encoder.blocks.1.norm2.bias"]
    rewrite(t)
    with pytest.raises(CheckpointError, match=r"missing key\(s\): blocks\.1\.norm2\.bias"):
        load_encoder(path, which="encoder")
    t = dict(good, **{"encoder.blocks.0.attn.extra": torch.zeros(2)})
    rewrite(t)
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\): blocks\.0\.attn\.extra"):
        load_encoder(path, which="encoder")
    t = dict(good, **{"encoder.norm.weight": torch.zeros(D + 1)})
    rewrite(t)
    with pytest.raises(CheckpointError, match=r"norm\.weight \(checkpoint \(97,\) vs model \(96,\)\)"):
        load_encoder(path, which="encoder")
    cfg = json.loads(meta_json)
    cfg["components"]["encoder"]["config"]["depht"] = 3
    path.with_suffix(".json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="depht"):
        load_encoder(path, which="encoder")


# ---------------------------------------------------------------- official V-JEPA 2 format


def test_official_rope_checkpoint_matches_naive_reference(tmp_path):
    sd = official_encoder_sd(seed=3)
    path = save_official(tmp_path / "vjepa2.pt", official_encoder_sd(seed=4), target=sd)
    enc = load_encoder(path, num_heads=HEADS)
    assert enc.config.pos_embed == "rope" and enc.load_info["component"] == "target_encoder"
    assert any("RoPE" in n for n in enc.load_info["notes"])
    with torch.no_grad():
        ours = enc(X).double()
    torch.testing.assert_close(ours, naive_encoder(sd, X), atol=1e-5, rtol=1e-5)
    # the online encoder is the other entry
    with torch.no_grad():
        other = load_encoder(path, which="encoder", num_heads=HEADS)(X).double()
    torch.testing.assert_close(other, naive_encoder(official_encoder_sd(seed=4), X), atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not HAVE_HF, reason="transformers not installed")
def test_official_checkpoint_matches_transformers(tmp_path):
    sd, psd = official_encoder_sd(seed=6), official_predictor_sd()
    path = save_official(tmp_path / "v.pt", sd, pred=psd)
    model = hf_model()
    model.load_state_dict(to_hf(sd, psd), strict=True)
    enc = load_encoder(path, num_heads=HEADS)
    pred = load_predictor(path, num_heads=PHEADS)
    ctx = torch.tensor([[0, 3, 5], [1, 2, 6]])
    tgt = torch.tensor([[1, 2, 4, 6, 7], [0, 3, 4, 5, 7]])
    with torch.no_grad():
        out = model(X.permute(0, 2, 1, 3, 4), context_mask=[ctx], target_mask=[tgt])
        full = enc(X)
        z = torch.gather(full, 1, ctx[..., None].expand(-1, -1, D))
        p = pred(z, ctx, tgt, enc.grid(X.shape), mask_index=1)  # HF's predictor uses mask token 1
    torch.testing.assert_close(full, out.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(p, out.predictor_output.last_hidden_state, atol=1e-5, rtol=1e-5)


def test_official_sincos_and_pos_embed_inference(tmp_path):
    table = naive_sincos_table(D, (2, 2, 2)).float()[None]
    sd = official_encoder_sd(seed=7, pos_embed=table)
    path = save_official(tmp_path / "s.pt", sd)
    with pytest.warns(UserWarning, match="sin-cos"):
        enc = load_encoder(path, num_heads=HEADS)
    assert enc.config.pos_embed == "sincos"
    with torch.no_grad():
        torch.testing.assert_close(enc(X).double(), naive_encoder(sd, X, rope=False), atol=1e-5, rtol=1e-5)
    # all-zero placeholder -> RoPE; learned table -> error unless the caller says RoPE
    zero = save_official(tmp_path / "z.pt", official_encoder_sd(pos_embed=torch.zeros(1, 8, D)))
    assert load_encoder(zero, num_heads=HEADS).config.pos_embed == "rope"
    learned = save_official(tmp_path / "l.pt", official_encoder_sd(pos_embed=torch.randn(1, 8, D)))
    with pytest.raises(CheckpointError, match="pos_embed='rope'"):
        load_encoder(learned, num_heads=HEADS)
    assert load_encoder(learned, num_heads=HEADS, pos_embed="rope").config.pos_embed == "rope"


def test_official_strict_errors_and_heads(tmp_path):
    sd = official_encoder_sd()
    with pytest.raises(CheckpointError, match="num_heads"):
        load_encoder(save_official(tmp_path / "a.pt", sd))  # width 96 is no V-JEPA preset
    broken = dict(sd)
    del broken["blocks.1.mlp.fc2.bias"]
    with pytest.raises(CheckpointError, match=r"missing key\(s\): blocks\.1\.mlp\.fc2\.bias"):
        load_encoder(save_official(tmp_path / "b.pt", broken), num_heads=HEADS)
    extra = dict(sd, **{"blocks.0.attn.q_norm.weight": torch.ones(32)})
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\): blocks\.0\.attn\.q_norm\.weight"):
        load_encoder(save_official(tmp_path / "c.pt", extra), num_heads=HEADS)
    bad = dict(sd, **{"blocks.1.attn.proj.weight": torch.zeros(D, D + 2)})
    with pytest.raises(CheckpointError, match=r"blocks\.1\.attn\.proj\.weight \(checkpoint \(96, 98\)"):
        load_encoder(save_official(tmp_path / "d.pt", bad), num_heads=HEADS)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_encoder(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        load_encoder(tmp_path / "missing.pt")


def test_bare_official_state_dict_file(tmp_path):
    sd = official_encoder_sd(seed=8)
    torch.save(with_prefix(sd, "module."), tmp_path / "bare.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enc = load_encoder(tmp_path / "bare.pth", num_heads=HEADS)
    with torch.no_grad():
        torch.testing.assert_close(enc(X).double(), naive_encoder(sd, X), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pos", ["rope", "sincos"])
def test_export_vjepa2_round_trip(tmp_path, pos):
    enc = tiny_encoder(pos, seed=9)
    pred = build_predictor(enc, predictor_dim=PD, depth=1, num_heads=PHEADS, num_mask_tokens=2).eval()
    path = export_vjepa2(enc, tmp_path / "exp.pt", predictor=pred, num_frames=4, img_size=32)
    raw = torch.load(path, weights_only=True)
    assert "module.backbone.blocks.0.attn.qkv.weight" in raw["encoder"]
    assert ("module.backbone.pos_embed" in raw["encoder"]) == (pos == "sincos")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = load_encoder(path, num_heads=HEADS)
        pback = load_predictor(path, num_heads=PHEADS)
    assert back.config.pos_embed == pos and pback.config.pos_embed == pos
    with torch.no_grad():
        torch.testing.assert_close(back(X), enc(X), atol=1e-6, rtol=0)
        # the exported file is the official layout, so the naive reference reads it too
        if pos == "rope":
            sd = {k[len("module.backbone."):]: v for k, v in raw["encoder"].items()}
            torch.testing.assert_close(back(X).double(), naive_encoder(sd, X), atol=1e-5, rtol=1e-5)
        c, t = torch.tensor([[0, 5]]), torch.tensor([[1, 2, 7]])
        z = torch.randn(1, 2, D)
        torch.testing.assert_close(pback(z, c, t, (2, 2, 2)), pred(z, c, t, (2, 2, 2)), atol=1e-6, rtol=0)


# ---------------------------------------------------------------- Hugging Face


@pytest.mark.skipif(not HAVE_HF, reason="transformers not installed")
def test_hf_save_pretrained_folder(tmp_path):
    model = hf_model(seed=11)
    model.save_pretrained(tmp_path / "hf")
    enc = load_encoder(tmp_path / "hf")
    assert enc.load_info["format"] == "hf" and enc.config.num_heads == HEADS
    with torch.no_grad():
        ref = model(X.permute(0, 2, 1, 3, 4), skip_predictor=True).last_hidden_state
        torch.testing.assert_close(enc(X), ref, atol=1e-5, rtol=1e-5)
    # the same weights as a bare state dict file (no config): shapes + num_heads
    torch.save(model.state_dict(), tmp_path / "hf.bin")
    enc2 = load_encoder(tmp_path / "hf.bin", num_heads=HEADS)
    with torch.no_grad():
        torch.testing.assert_close(enc2(X), ref, atol=1e-5, rtol=1e-5)
    sd = model.state_dict()
    del sd["encoder.layer.1.attention.key.bias"]
    torch.save(sd, tmp_path / "broken.bin")
    with pytest.raises(CheckpointError, match=r"encoder\.layer\.1\.attention\.key\.bias"):
        load_encoder(tmp_path / "broken.bin", num_heads=HEADS)
