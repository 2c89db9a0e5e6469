"""The official probe format (V-JEPA 2 ``AttentiveClassifier`` as SurgMotion saves it): a hand-built state dict
with the official key names (facebookresearch/vjepa2 src/models/attentive_pooler.py, read at commit c2963a4)
loads and matches a naive float64 forward written here; V-JEPA 2's init; round trip; clear errors;
``unisurg predict`` and ``unisurg bench`` on an official checkpoint."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import BB_A
from conftest import bench_cli as cli

from unisurg.evaluation.official_probe import (
    OfficialProbeError,
    load_official_probes,
    official_spec,
    probe_to_official_state,
)
from unisurg.evaluation.predict import load_probe
from unisurg.evaluation.probe import MultiProbe, ProbeSpec
from unisurg.evaluation.runner import run_benchmark
from unisurg.synth.generate import generate_dataset

torch.set_num_threads(1)


def official_state(D=32, depth=3, K=5, hidden=48, seed=0, prefix="") -> dict[str, torch.Tensor]:
    """Random tensors under the official names (nn.Linear weights [out, in]); LayerNorms not at identity."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    s = {"pooler.query_tokens": r(1, 1, D, scale=1.0)}
    for i in range(depth - 1):
        b = f"pooler.blocks.{i}."
        s |= {b + "norm1.weight": 1 + r(D), b + "norm1.bias": r(D), b + "attn.qkv.weight": r(3 * D, D),
              b + "attn.qkv.bias": r(3 * D), b + "attn.proj.weight": r(D, D), b + "attn.proj.bias": r(D),
              b + "norm2.weight": 1 + r(D), b + "norm2.bias": r(D), b + "mlp.fc1.weight": r(hidden, D),
              b + "mlp.fc1.bias": r(hidden), b + "mlp.fc2.weight": r(D, hidden), b + "mlp.fc2.bias": r(D)}
    c = "pooler.cross_attention_block."
    s |= {c + "norm1.weight": 1 + r(D), c + "norm1.bias": r(D), c + "xattn.q.weight": r(D, D), c + "xattn.q.bias": r(D),
          c + "xattn.kv.weight": r(2 * D, D), c + "xattn.kv.bias": r(2 * D), c + "norm2.weight": 1 + r(D),
          c + "norm2.bias": r(D), c + "mlp.fc1.weight": r(hidden, D), c + "mlp.fc1.bias": r(hidden),
          c + "mlp.fc2.weight": r(D, hidden), c + "mlp.fc2.bias": r(D), "linear.weight": r(K, D), "linear.bias": r(K)}
    return {prefix + k: v for k, v in s.items()}


def naive_forward(state: dict, x: np.ndarray, heads: int) -> np.ndarray:
    """float64 reference of AttentiveClassifier.forward, written from the module's description."""
    S = {k.removeprefix("module."): v.double().numpy() for k, v in state.items()}

    def ln(v, p):
        mu = v.mean(-1, keepdims=True)
        var = ((v - mu) ** 2).mean(-1, keepdims=True)
        return (v - mu) / np.sqrt(var + 1e-5) * S[p + ".weight"] + S[p + ".bias"]

    def lin(v, p):
        return v @ S[p + ".weight"].T + S[p + ".bias"]

    def gelu(v):
        return 0.5 * v * (1 + np.vectorize(math.erf)(v / math.sqrt(2)))

    def attend(q, k, v):  # [n, D], [N, D], [N, D] per sample, split into heads
        D = q.shape[-1]
        dh = D // heads
        out = np.zeros_like(q)
        for h in range(heads):
            sl = slice(h * dh, (h + 1) * dh)
            a = q[:, sl] @ k[:, sl].T / math.sqrt(dh)
            a = np.exp(a - a.max(-1, keepdims=True))
            a /= a.sum(-1, keepdims=True)
            out[:, sl] = a @ v[:, sl]
        return out

    D = S["pooler.query_tokens"].shape[-1]
    n_blocks = len({k.split(".")[2] for k in S if k.startswith("pooler.blocks.")})
    outs = []
    for xb in x.astype(np.float64):
        t = xb
        for i in range(n_blocks):
            b = f"pooler.blocks.{i}"
            qkv = lin(ln(t, b + ".norm1"), b + ".attn.qkv")
            t = t + lin(attend(qkv[:, :D], qkv[:, D:2 * D], qkv[:, 2 * D:]), b + ".attn.proj")
            t = t + lin(gelu(lin(ln(t, b + ".norm2"), b + ".mlp.fc1")), b + ".mlp.fc2")
        c = "pooler.cross_attention_block"
        q = S["pooler.query_tokens"][0]
        kv = lin(ln(t, c + ".norm1"), c + ".xattn.kv")
        q = q + attend(lin(q, c + ".xattn.q"), kv[:, :D], kv[:, D:])  # no output projection
        q = q + lin(gelu(lin(ln(q, c + ".norm2"), c + ".mlp.fc1")), c + ".mlp.fc2")
        outs.append(lin(q[0], "linear"))
    return np.stack(outs)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_official_state_dict_matches_a_naive_float64_forward(tmp_path, prefix):
    heads = [official_state(seed=0, prefix=prefix), official_state(seed=1, prefix=prefix)]
    path = tmp_path / "probe.pth.tar"
    torch.save({"classifiers": heads, "epoch": 1}, path)
    probe = load_official_probes(path, heads=4)
    assert probe.n_probes == 2 and probe.spec.depth == 3 and probe.spec.eps == 1e-5 and not probe.spec.cross_proj
    assert probe.spec.mlp_ratio == 1.5 and probe.spec.out_dim == 5
    x = np.random.default_rng(0).standard_normal((3, 10, 32)).astype(np.float32)
    with torch.no_grad():
        got = probe(torch.from_numpy(x)).numpy()  # [P, B, K]
    for p in range(2):
        want = naive_forward(heads[p], x, heads=4)
        np.testing.assert_allclose(got[p], want, rtol=0, atol=2e-5 * max(1.0, np.abs(want).max()))
    assert np.abs(got[0] - got[1]).max() > 1e-2  # each head its own weights
    # a single bare classifier state dict and head selection
    torch.save(heads[1], tmp_path / "one.pt")
    one = load_official_probes(tmp_path / "one.pt", heads=4)
    again = load_official_probes(path, heads=4, indices=[1])
    with torch.no_grad():
        np.testing.assert_allclose(one(torch.from_numpy(x)).numpy()[0], got[1], atol=1e-6)
        np.testing.assert_allclose(again(torch.from_numpy(x)).numpy()[0], got[1], atol=1e-6)


def test_round_trip_to_the_official_layout(tmp_path):
    state = official_state(seed=3)
    torch.save({"classifiers": [state]}, tmp_path / "c.pt")
    back = probe_to_official_state(load_official_probes(tmp_path / "c.pt", heads=4))
    assert set(back) == set(state)
    for k in state:
        assert torch.equal(back[k], state[k]), k


def test_vjepa2_init_and_rescale():
    """trunc_normal(std 0.02) cut at +-2 absolute (so values beyond 2 std occur); V-JEPA 2's rescale:
    self-attention block l: attn.proj, mlp.fc2 / sqrt(2 l); cross block: mlp.fc2 / sqrt(2 L), L = last block."""
    spec = ProbeSpec("attentive", 64, 3, 64, depth=3, heads=4, eps=1e-5, cross_proj=False, init="vjepa2")
    m = MultiProbe(spec, 1, seed=0)
    P = dict(m.named_parameters())
    std = lambda n: float(P[n].detach().std())  # noqa: E731
    assert std("cross.xattn.q.weight") == pytest.approx(0.02, rel=0.05)
    assert float(P["cross.xattn.q.weight"].detach().abs().max()) > 0.04  # not cut at 2 std
    assert std("blocks.0.attn.proj.weight") == pytest.approx(0.02 / math.sqrt(2), rel=0.05)
    assert std("blocks.1.mlp.fc2.weight") == pytest.approx(0.02 / math.sqrt(4), rel=0.05)
    assert std("blocks.1.attn.qkv.weight") == pytest.approx(0.02, rel=0.05)
    assert std("cross.mlp.fc2.weight") == pytest.approx(0.02 / math.sqrt(4), rel=0.05)
    assert std("cross.mlp.fc1.weight") == pytest.approx(0.02, rel=0.05)
    assert "cross.xattn.proj.weight" not in P and m.cross.norm1.eps == 1e-5
    ours = MultiProbe(ProbeSpec("attentive", 64, 3, 64, depth=3, heads=4), 1, seed=0)
    assert float(dict(ours.named_parameters())["cross.xattn.q.weight"].detach().abs().max()) <= 0.04 + 1e-7


def test_clear_errors(tmp_path):
    ours = MultiProbe(ProbeSpec("attentive", 32, 5, 32, depth=2, heads=4), 1)
    state = official_state(depth=2)
    state["pooler.cross_attention_block.xattn.proj.weight"] = torch.zeros(32, 32)
    torch.save({"classifiers": [state]}, tmp_path / "proj.pt")
    with pytest.raises(OfficialProbeError, match="output projection"):
        load_official_probes(tmp_path / "proj.pt", heads=4)
    torch.save({"model": ours.state_dict()}, tmp_path / "other.pt")
    with pytest.raises(OfficialProbeError, match="classifiers"):
        load_official_probes(tmp_path / "other.pt")
    with pytest.raises(OfficialProbeError, match="divisible"):
        official_spec(official_state(), heads=5)
    torch.save({"classifiers": [official_state()]}, tmp_path / "ok.pt")
    with pytest.raises(OfficialProbeError, match="head 2 requested but the checkpoint has 1"):
        load_official_probes(tmp_path / "ok.pt", heads=4, indices=[2])


OFFICIAL_TINY = ["probe.cross_proj=false", "probe.eps=1e-5", "probe.init=vjepa2", "clip.norm=imagenet"]


@pytest.fixture(scope="module")
def official_run(tmp_path_factory):
    """A tiny benchmark run with the official probe layout, its chosen probe saved as an official checkpoint."""

    base = tmp_path_factory.mktemp("official")
    generate_dataset(base / "synth", n_videos=5, seconds=12, height=64, width=96, fps=5, seed=2, progress=False)
    res = run_benchmark([BB_A], "synthetic", base / "synth", out=base / "out", config="tiny",
                        overrides=[f"cache_dir={base / 'cache'}", "report.bootstrap_n=20", "report.figures=false",
                                   *OFFICIAL_TINY], log=lambda s: None)
    run = next(iter(res["runs"].values()))
    probe_dir = base / "out" / run["run_dir"]
    probe, _ = load_probe(probe_dir)
    torch.save({"classifiers": [probe_to_official_state(probe)]}, base / "official.pth.tar")
    return base, probe_dir, run


def test_predict_with_an_official_checkpoint_equals_the_probe_folder(official_run):
    base, probe_dir, run = official_run
    video = base / "synth" / "videos" / f"{run['honest']['per_unit'][0]['video']}.mp4"
    assert cli("predict", str(video), "--backbone", BB_A, "--probe", str(probe_dir), "--out", str(base / "a"),
               "--cache-dir", str(base / "cache"), "--quiet") == 0
    names = ",".join(run["class_names"])
    sets = ["--set", "clip.frames=4", "--set", "clip.res=32", "--set", "clip.short_side=36", "--set", "clip.norm=imagenet"]
    assert cli("predict", str(video), "--backbone", BB_A, "--probe", str(base / "official.pth.tar"), "--out",
               str(base / "b"), "--cache-dir", str(base / "cache"), "--quiet", "--heads", "2", "--class-names", names,
               "--protocol", "unisurg", *sets) == 0
    a = json.loads(next((base / "a").glob("*.json")).read_text())
    b = json.loads(next((base / "b").glob("*.json")).read_text())
    assert a["labels"] == b["labels"] and b["label_names"] == a["label_names"]
    np.testing.assert_allclose(np.array(a["probabilities"]), np.array(b["probabilities"]), atol=2e-5)
    assert cli("predict", str(video), "--backbone", BB_A, "--probe", str(base / "official.pth.tar"), "--out",
               str(base / "c"), "--cache-dir", str(base / "cache"), "--quiet", "--heads", "2",
               "--class-names", "a,b", "--protocol", "unisurg", *sets) == 2  # wrong number of names: clear error


def test_bench_evaluates_the_heads_of_an_official_checkpoint(official_run, tmp_path):
    """Four heads: 0 and 2 the same trained probe, 1 and 3 fresh ones; no training happens."""

    base, _, run = official_run
    trained = torch.load(base / "official.pth.tar", weights_only=True)["classifiers"][0]
    spec = ProbeSpec("attentive", 32, len(run["class_names"]), 32, depth=2, heads=2, eps=1e-5, cross_proj=False,
                     init="vjepa2")
    fresh = [probe_to_official_state(MultiProbe(spec, 1, seed=s)) for s in (5, 6)]
    torch.save({"classifiers": [trained, fresh[0], trained, fresh[1]]}, tmp_path / "heads.pt")
    res = run_benchmark([BB_A], "synthetic", base / "synth", out=tmp_path / "o", config="tiny",
                        overrides=[f"cache_dir={base / 'cache'}", "report.bootstrap_n=20", "report.figures=false",
                                   *OFFICIAL_TINY, f"probe.official={tmp_path / 'heads.pt'}"], log=lambda s: None)
    got = next(iter(res["runs"].values()))
    probes = got["probes"]
    assert probes[0]["test"] == probes[2]["test"] and probes[0]["val"] == probes[2]["val"]
    assert probes[0]["test"]["accuracy"] == pytest.approx(run["probes"][run["honest"]["probe_index"]]["test"]["accuracy"])
    assert all(math.isnan(v) for v in got["probes"][0]["train_loss_last_epoch"])
    with pytest.raises(OfficialProbeError, match="4 heads but"):
        run_benchmark([BB_A], "synthetic", base / "synth", out=tmp_path / "o2", config="tiny",
                      overrides=[f"cache_dir={base / 'cache'}", "report.figures=false", *OFFICIAL_TINY,
                                 f"probe.official={tmp_path / 'heads.pt'}", "train.lrs=[1e-3]"], log=lambda s: None)
