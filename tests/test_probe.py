"""Stacked attentive probes: shapes, equality with independent per-probe modules (outputs and gradients),
per-probe AdamW against torch.optim.AdamW, class-balanced weights, schedule, and learning a toy task."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from unisurg.evaluation.task_losses import class_balanced_weights, multi_bce, multi_cross_entropy, multi_regression
from unisurg.evaluation.probe_optim import BatchedAdamW, cosine_factor
from unisurg.evaluation.probe import MultiDenseDecoder, MultiProbe, ProbeSpec

torch.set_num_threads(1)


# -- an independent reference: one probe as plain modules, explicit softmax attention ----------------


class RefBlock(nn.Module):
    def __init__(self, D, H, hidden):
        super().__init__()
        self.H = H
        self.n1, self.n2 = nn.LayerNorm(D, eps=1e-6), nn.LayerNorm(D, eps=1e-6)
        self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.fc1, self.fc2 = nn.Linear(D, hidden), nn.Linear(hidden, D)

    def forward(self, x):
        B, N, D = x.shape
        dh = D // self.H
        q, k, v = self.qkv(self.n1(x)).chunk(3, dim=-1)
        q, k, v = (t.reshape(B, N, self.H, dh).transpose(1, 2) for t in (q, k, v))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh), dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(B, N, D))
        return x + self.fc2(F.gelu(self.fc1(self.n2(x))))


class RefCross(nn.Module):
    def __init__(self, D, H, hidden):
        super().__init__()
        self.H = H
        self.n1, self.n2 = nn.LayerNorm(D, eps=1e-6), nn.LayerNorm(D, eps=1e-6)
        self.q, self.kv, self.proj = nn.Linear(D, D), nn.Linear(D, 2 * D), nn.Linear(D, D)
        self.fc1, self.fc2 = nn.Linear(D, hidden), nn.Linear(hidden, D)

    def forward(self, q, x):
        B, N, D = x.shape
        dh = D // self.H
        k, v = self.kv(self.n1(x)).chunk(2, dim=-1)
        qq = self.q(q).reshape(B, 1, self.H, dh).transpose(1, 2)
        k, v = (t.reshape(B, N, self.H, dh).transpose(1, 2) for t in (k, v))
        att = torch.softmax(qq @ k.transpose(-1, -2) / math.sqrt(dh), dim=-1)
        q = q + self.proj((att @ v).transpose(1, 2).reshape(B, 1, D))
        return q + self.fc2(F.gelu(self.fc1(self.n2(q))))


class RefProbe(nn.Module):
    def __init__(self, D_in, W, H, depth, K, mlp_ratio=4.0):
        super().__init__()
        hidden = int(W * mlp_ratio)
        self.proj_in = nn.Linear(D_in, W) if W != D_in else None
        self.blocks = nn.ModuleList([RefBlock(W, H, hidden) for _ in range(depth - 1)])
        self.query = nn.Parameter(torch.zeros(1, 1, W))
        self.cross = RefCross(W, H, hidden)
        self.head = nn.Linear(W, K)

    def forward(self, x):
        if self.proj_in is not None:
            x = self.proj_in(x)
        for b in self.blocks:
            x = b(x)
        q = self.query.expand(x.shape[0], 1, -1)
        return self.head(self.cross(q, x)[:, 0])


def _lin(dst: nn.Linear, w, b):
    dst.weight.data.copy_(w.T)
    dst.bias.data.copy_(b)


def _ln(dst: nn.LayerNorm, src, p):
    dst.weight.data.copy_(src.weight[p])
    dst.bias.data.copy_(src.bias[p])


def reference_from(multi: MultiProbe, p: int) -> RefProbe:
    s = multi.spec
    ref = RefProbe(s.embed_dim, s.width, s.heads, s.depth, s.out_dim, s.mlp_ratio).to(multi.query.dtype)
    ml = lambda m: (m.weight[p].detach(), m.bias[p].detach())  # noqa: E731
    if ref.proj_in is not None:
        _lin(ref.proj_in, *ml(multi.proj_in))
    for rb, mb in zip(ref.blocks, multi.blocks):
        _ln(rb.n1, mb.norm1, p)
        _ln(rb.n2, mb.norm2, p)
        _lin(rb.qkv, *ml(mb.attn.qkv))
        _lin(rb.proj, *ml(mb.attn.proj))
        _lin(rb.fc1, *ml(mb.mlp.fc1))
        _lin(rb.fc2, *ml(mb.mlp.fc2))
    c, mc = ref.cross, multi.cross
    _ln(c.n1, mc.norm1, p)
    _ln(c.n2, mc.norm2, p)
    _lin(c.q, *ml(mc.xattn.q))
    _lin(c.kv, *ml(mc.xattn.kv))
    _lin(c.proj, *ml(mc.xattn.proj))
    _lin(c.fc1, *ml(mc.mlp.fc1))
    _lin(c.fc2, *ml(mc.mlp.fc2))
    ref.query.data.copy_(multi.query[p].detach().view(1, 1, -1))
    _lin(ref.head, *ml(multi.head))
    return ref


def ref_grad_of(multi_name: str, ref: RefProbe):
    """The reference parameter matching a stacked parameter name, and whether it is transposed."""
    table = {"xattn.q.": "q.", "xattn.kv.": "kv.", "xattn.proj.": "proj.", "norm1": "n1", "norm2": "n2",
             "attn.qkv": "qkv", "attn.proj": "proj", "mlp.fc1": "fc1", "mlp.fc2": "fc2"}
    name = multi_name
    for a, b in table.items():
        name = name.replace(a, b)
    param = dict(ref.named_parameters())[name]
    transposed = multi_name.endswith("weight") and "norm" not in multi_name
    return param, transposed


# -- tests --------------------------------------------------------------------------------------------


def test_shapes_attentive_pooled_and_dense():
    spec = ProbeSpec("attentive", embed_dim=16, out_dim=5, width=16, depth=3, heads=4)
    m = MultiProbe(spec, 3)
    assert m(torch.randn(2, 7, 16)).shape == (3, 2, 5)
    assert m(torch.randn(2, 16)).shape == (3, 2, 5)  # pooled features: one token
    narrow = MultiProbe(ProbeSpec("attentive", 16, 4, width=8, depth=2, heads=2), 2)
    assert narrow(torch.randn(3, 5, 16)).shape == (2, 3, 4)
    with pytest.raises(ValueError, match="tokens"):
        m(torch.randn(2, 7, 15))
    with pytest.raises(ValueError, match="not divisible"):
        MultiProbe(ProbeSpec("attentive", 16, 4, width=16, depth=2, heads=3), 1)
    dense = MultiDenseDecoder(ProbeSpec("dense", 16, 1, 16, hidden=8, patch_size=4, grid=(2, 3, 5)), 2)
    assert dense(torch.randn(4, 2 * 3 * 5, 16)).shape == (2, 4, 1, 12, 20)
    one = m.select(1)
    assert one.n_probes == 1 and torch.allclose(one(torch.ones(1, 3, 16))[0], m(torch.ones(1, 3, 16))[1], atol=1e-6)
    # activation checkpointing changes memory, not gradients
    ck = MultiProbe(spec, 3, checkpoint=True)
    ck.load_state_dict(m.state_dict())
    x = torch.randn(2, 7, 16)
    m(x).square().sum().backward()
    ck(x).square().sum().backward()
    torch.testing.assert_close(ck.blocks[0].attn.qkv.weight.grad, m.blocks[0].attn.qkv.weight.grad)
    with pytest.raises(ValueError, match="unknown keys"):
        ProbeSpec.from_json({**spec.to_json(), "colour": 1})


def test_probe_init_does_not_depend_on_how_many_probes():
    spec = ProbeSpec("attentive", 8, 3, 8, depth=2, heads=2)
    a, b = MultiProbe(spec, 5, seed=3), MultiProbe(spec, 2, seed=3)
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa[:2], pb), n
    assert not torch.equal(a.head.weight[0], a.head.weight[1])


@pytest.mark.parametrize("width", [12, 8])
def test_batched_probes_equal_independent_probes_outputs_and_gradients(width):
    torch.manual_seed(0)
    P, B, N, D, K = 4, 3, 6, 12, 5
    spec = ProbeSpec("attentive", D, K, width, depth=4, heads=2)
    multi = MultiProbe(spec, P, seed=1).double()
    with torch.no_grad():  # non-trivial norms and biases so that every parameter is exercised
        for n, p in multi.named_parameters():
            if "norm" in n or n.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    refs = [reference_from(multi, p).double() for p in range(P)]
    x = torch.randn(B, N, D, dtype=torch.float64)
    y = torch.randint(0, K, (B,))
    out = multi(x)
    ref_out = torch.stack([r(x) for r in refs])
    assert out.shape == (P, B, K)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    # gradients: the sum of per-probe losses gives each probe the gradient of its own loss
    scale = torch.arange(1, P + 1, dtype=torch.float64)
    (F.cross_entropy(out.reshape(P * B, K), y.repeat(P), reduction="none").view(P, B).mean(1) * scale).sum().backward()
    for p, r in enumerate(refs):
        (F.cross_entropy(r(x), y) * scale[p]).backward()
    for name, param in multi.named_parameters():
        for p, r in enumerate(refs):
            if name == "query":
                ref_param, tr = r.query, False
                got = param.grad[p].view(1, 1, -1)
            else:
                ref_param, tr = ref_grad_of(name, r)
                got = param.grad[p]
            want = ref_param.grad.T if tr else ref_param.grad
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11, msg=f"{name} probe {p}")


def test_first_block_folds_its_norm_into_qkv_and_skips_the_input_gradient():
    """``MultiLinear.after_affine`` equals the plain ``Linear(scale * xn + shift)`` in float64 (outputs and the
    gradients of scale, shift, weight and bias), and on a frozen input its forward + backward costs exactly the
    forward product plus one weight-gradient product (plus the [P, in] x [in, out] fold), not three products."""
    from torch.utils.flop_counter import FlopCounterMode

    from unisurg.evaluation.probe_layers import MultiLinear

    torch.manual_seed(0)
    P, M, d_in, d_out = 3, 10, 6, 9
    lin = MultiLinear(P, d_in, d_out).double()
    with torch.no_grad():
        lin.weight.normal_()
        lin.bias.normal_()
    scale = torch.randn(P, d_in, dtype=torch.float64, requires_grad=True)
    shift = torch.randn(P, d_in, dtype=torch.float64, requires_grad=True)
    xn = torch.randn(2, M // 2, d_in, dtype=torch.float64)
    g = torch.randn(P, 2, M // 2, d_out, dtype=torch.float64)

    got = lin.after_affine(xn, scale, shift)
    grads = torch.autograd.grad((got * g).sum(), [scale, shift, lin.weight, lin.bias])
    want, want_grads = [], []
    for p in range(P):
        ref = nn.Linear(d_in, d_out).double()
        _lin(ref, lin.weight[p].detach(), lin.bias[p].detach())
        sc, sh = scale[p].detach().requires_grad_(), shift[p].detach().requires_grad_()
        out = ref(xn * sc + sh)
        gp = torch.autograd.grad((out * g[p]).sum(), [sc, sh, ref.weight, ref.bias])
        want.append(out)
        want_grads.append((gp[0], gp[1], gp[2].T, gp[3]))
    torch.testing.assert_close(got, torch.stack(want), rtol=1e-12, atol=1e-12)
    for i, name in enumerate(("scale", "shift", "weight", "bias")):
        torch.testing.assert_close(grads[i], torch.stack([w[i] for w in want_grads]), rtol=1e-12, atol=1e-12,
                                   msg=name)

    with FlopCounterMode(display=False) as fc:
        lin.after_affine(xn, scale, shift).sum().backward()
    one_product = 2 * P * M * d_in * d_out
    assert fc.get_total_flops() == 2 * one_product + 3 * (2 * P * d_in * d_out)
    with FlopCounterMode(display=False) as fc:  # the plain path on the same input pays the input gradient too
        lin(xn.unsqueeze(0) * scale[:, None, None] + shift[:, None, None]).sum().backward()
    assert fc.get_total_flops() == 3 * one_product


def test_dense_decoder_equals_naive_patch_loop():
    torch.manual_seed(0)
    s, C, (T, Hp, Wp), D = 3, 2, (2, 2, 3), 6
    dec = MultiDenseDecoder(ProbeSpec("dense", D, C, D, hidden=5, patch_size=s, grid=(T, Hp, Wp)), 2).double()
    x = torch.randn(1, T * Hp * Wp, D, dtype=torch.float64)
    out = dec(x)
    xm = x.view(1, T, Hp * Wp, D).mean(1)[0]
    for p in range(2):
        ln = F.layer_norm(xm, (D,), dec.norm.weight[p], dec.norm.bias[p], eps=1e-6)
        y = F.gelu(ln @ dec.fc1.weight[p] + dec.fc1.bias[p]) @ dec.fc2.weight[p] + dec.fc2.bias[p]  # [Hp*Wp, C*s*s]
        for h in range(Hp):
            for w in range(Wp):
                for c in range(C):
                    for i in range(s):
                        for j in range(s):
                            want = y[h * Wp + w, c * s * s + i * s + j]
                            assert abs(out[p, 0, c, h * s + i, w * s + j] - want) < 1e-12


def test_batched_adamw_matches_torch_adamw_per_probe():
    torch.manual_seed(0)
    P, B, N, D, K = 3, 4, 5, 8, 3
    spec = ProbeSpec("attentive", D, K, D, depth=2, heads=2)
    multi = MultiProbe(spec, P, seed=2).double()
    refs = [reference_from(multi, p).double() for p in range(P)]
    lrs, wds = [3e-2, 1e-2, 3e-3], [0.8, 0.0, 0.1]
    opt = BatchedAdamW(multi, lrs, wds, betas=(0.9, 0.95), eps=1e-8)
    ref_opts = []
    for r, lr, wd in zip(refs, lrs, wds):
        decay = [p for n, p in r.named_parameters() if not n.endswith("bias") and p.dim() > 1]
        no_decay = [p for n, p in r.named_parameters() if n.endswith("bias") or p.dim() <= 1]
        ref_opts.append(torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
                                          lr=lr, betas=(0.9, 0.95), eps=1e-8))
    total = 4
    for step in range(total):
        x = torch.randn(B, N, D, dtype=torch.float64)
        y = torch.randint(0, K, (B,))
        f = cosine_factor(step, total, warmup=1)
        opt.set_factor(f)
        opt.zero_grad()
        multi_cross_entropy(multi(x), y).sum().backward()
        opt.step()
        for r, o, lr in zip(refs, ref_opts, lrs):
            for g in o.param_groups:
                g["lr"] = lr * f
            o.zero_grad()
            F.cross_entropy(r(x), y).backward()
            o.step()
    for p, r in enumerate(refs):
        torch.testing.assert_close(multi.head.weight[p], r.head.weight.T, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(multi.blocks[0].attn.qkv.weight[p], r.blocks[0].qkv.weight.T, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(multi.blocks[0].norm1.weight[p], r.blocks[0].n1.weight, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(multi.query[p].view(1, 1, -1), r.query, rtol=1e-9, atol=1e-12)
    # and the lr / wd really differ per probe: probe 1 (wd 0) vs a decayed copy would not match
    assert not torch.allclose(multi.head.weight[0], multi.head.weight[1])


def test_cosine_schedule_values():
    assert cosine_factor(0, 10) == 1.0
    assert cosine_factor(5, 10) == pytest.approx(0.5)
    assert cosine_factor(10, 10) == pytest.approx(0.0)
    assert [cosine_factor(s, 10, warmup=2) for s in (0, 1)] == [0.5, 1.0]
    assert cosine_factor(6, 10, warmup=2) == pytest.approx(0.5)


def test_class_balanced_weights_by_hand_and_weighted_ce():
    labels = np.array([0, 0, 0, 1, 2, 2, -1])
    w = class_balanced_weights(labels, 4)
    # N = 6 labelled, K = 4: w_c = 6 / (4 n_c); class 3 absent -> 0
    assert w.tolist() == [6 / 12, 6 / 4, 6 / 8, 0.0]
    assert class_balanced_weights([1, 0, 1, 0], 2).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="n_classes"):
        class_balanced_weights([0, 5], 3)
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 2, 0, 1])
    wt = torch.tensor(w)
    got = multi_cross_entropy(logits, y, wt)
    for p in range(3):
        want = nn.CrossEntropyLoss(weight=wt)(logits[p], y)
        assert got[p].item() == pytest.approx(want.item(), rel=1e-12)
    t = torch.randint(0, 2, (6, 4))
    assert multi_bce(logits, t)[1].item() == pytest.approx(F.binary_cross_entropy_with_logits(logits[1], t.double()).item())
    pred = torch.randn(2, 6, 1, dtype=torch.float64)
    yr = torch.randn(6, dtype=torch.float64)
    assert multi_regression(pred, yr, "l1")[0].item() == pytest.approx((pred[0, :, 0] - yr).abs().mean().item())
    assert multi_regression(pred, yr, "mse")[1].item() == pytest.approx(((pred[1, :, 0] - yr) ** 2).mean().item())


def test_probes_learn_a_separable_toy_task():
    torch.manual_seed(0)
    n, N, D, K = 96, 4, 16, 3
    y = torch.randint(0, K, (n,))
    centers = torch.randn(K, D) * 2
    x = torch.randn(n, N, D) * 0.5 + centers[y][:, None, :]
    spec = ProbeSpec("attentive", D, K, D, depth=2, heads=2)
    m = MultiProbe(spec, 2, seed=0)
    opt = BatchedAdamW(m, [3e-3, 1e-6], [0.01, 0.01])
    for epoch in range(8):
        for i in range(0, n, 16):
            opt.zero_grad()
            multi_cross_entropy(m(x[i:i + 16]), y[i:i + 16]).sum().backward()
            opt.step()
    acc = (m(x).argmax(-1) == y).float().mean(dim=1)
    assert acc[0] > 0.95  # a sensible lr learns
    assert acc[1] < acc[0]  # a tiny lr barely moves: the per-probe lr is applied


class _KernelDtypes(TorchDispatchMode):
    """Records each matmul / attention kernel's name, operand shapes and operand dtypes as it runs
    (below autocast, so after its casts)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if "bmm" in name or "scaled_dot_product" in name:
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            self.seen.append((name, [tuple(t.shape) for t in tensors], [t.dtype for t in tensors]))
        return func(*args, **(kwargs or {}))


def test_cpu_bf16_autocast_runs_the_matmuls_in_bf16_and_stays_close_to_float64():
    """``train.amp_cpu``: under CPU bf16 autocast the stacked linears run in bf16, the attention in fp32
    (``probe_layers.attention``), and outputs / gradients stay within bf16 rounding of the float64 reference."""
    from unisurg.evaluation.bench_config import BenchConfig
    from unisurg.evaluation.probe_layers import attention
    from unisurg.evaluation.probe_training import _autocast

    torch.manual_seed(0)
    P, B, N, D, K = 3, 2, 16, 32, 5
    multi = MultiProbe(ProbeSpec("attentive", D, K, D, depth=3, heads=4), P, seed=2)
    x = torch.randn(B, N, D)
    y = torch.randint(0, K, (B,))
    tc = BenchConfig().train
    assert not _autocast(torch.device("cpu"), tc)._enabled  # off by default: CPU results stay fp32
    tc.amp_cpu = True
    with _autocast(torch.device("cpu"), tc), _KernelDtypes() as kernels:
        out = multi(x)
    matmuls = [(shapes, dtypes) for name, shapes, dtypes in kernels.seen if "bmm" in name]
    assert len(matmuls) >= 4 * len(multi.blocks) and all(set(d) == {torch.bfloat16} for _, d in matmuls)
    # both self-attention blocks' qkv products over all B * N tokens, the first folded with its norm (after_affine)
    assert sum(shapes[-2][-2] == B * N and shapes[-1][-1] == 3 * D for shapes, _ in matmuls) == len(multi.blocks) == 2
    sdpa = [dtypes for name, _, dtypes in kernels.seen if "scaled_dot_product" in name]
    assert len(sdpa) == len(multi.blocks) and all(set(d) == {torch.float32} for d in sdpa)
    F.cross_entropy(out.float().flatten(0, 1), y.repeat(P)).backward()
    ref = MultiProbe(multi.spec, P, seed=2).double()
    ref.load_state_dict(multi.state_dict())
    ref_out = ref(x.double())
    F.cross_entropy(ref_out.flatten(0, 1), y.repeat(P)).backward()
    torch.testing.assert_close(out.double(), ref_out, rtol=0.05, atol=0.05)
    for (n, a), (_, b) in zip(multi.named_parameters(), ref.named_parameters()):
        scale = b.grad.abs().max().item() + 1e-12
        assert (a.grad.double() - b.grad).abs().max().item() <= 0.05 * scale, n
    # the attention helper: bf16 in, fp32 arithmetic, bf16 out
    q, k, v = (torch.randn(2, 4, 16, 8).bfloat16() for _ in range(3))
    want = F.scaled_dot_product_attention(q.float(), k.float(), v.float()).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = attention(q, k, v)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)


def test_probes_in_groups_equal_one_pass_outputs_and_gradients():
    """Large activations run in groups of probes (``probes_per_chunk``): same outputs and gradients as one pass."""
    torch.manual_seed(0)
    P, B, N, D, K = 5, 2, 6, 8, 3
    for width in (8, 12):  # without and with the input projection
        spec = ProbeSpec("attentive", D, K, width, depth=3, heads=2)
        a, b = MultiProbe(spec, P, seed=1).double(), MultiProbe(spec, P, seed=1).double()
        b.chunk = 2  # groups of 2, 2, 1
        assert a.probes_per_chunk(torch.zeros(B, N, D)) == P and b.probes_per_chunk(torch.zeros(B, N, D)) == 2
        x = torch.randn(B, N, D, dtype=torch.float64)
        y = torch.randint(0, K, (B,))
        outs = []
        for m in (a, b):
            out = m(x)
            F.cross_entropy(out.flatten(0, 1), y.repeat(P)).backward()
            outs.append(out)
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-12, atol=1e-12)
        for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
            torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-12, atol=1e-12, msg=n)
    # the automatic rule: groups whose MLP activation fits CHUNK_BYTES
    from unisurg.evaluation import probe as probe_module
    m = MultiProbe(ProbeSpec("attentive", 256, 7, 256, depth=4, heads=16), 20)
    per_probe = 4 * 1024 * 1024 * 4  # B x N x hidden x fp32 bytes
    assert m.probes_per_chunk(torch.empty(4, 1024, 256, device="meta")) == probe_module.CHUNK_BYTES // per_probe
    assert m.probes_per_chunk(torch.empty(4, 64, 256, device="meta")) == 20
