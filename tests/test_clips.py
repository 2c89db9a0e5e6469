"""Clip dataset and loader: shapes, short videos, normalisation, determinism across workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import write_video
from unisurg.data.clips import ClipDataset, ClipSpec, clip_frame_indices, make_loader
from unisurg.data.ingest import IngestItem, IngestParams, ingest
from unisurg.data.sampler import BalancedSampler
from unisurg.data.store import FrameStore


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    items = []
    for i, (n, ds, sp) in enumerate([(80, "d1", "s1"), (70, "d1", "s1"), (30, "d2", "s2")]):
        p = write_video(root / "in" / f"v{i}.mp4", n_frames=n, fps=25, size=(64, 96), seed=i)
        items.append(IngestItem(p.resolve(), ds, sp))
    ingest(items, root / "store", IngestParams(fps=25, short_side=64), progress=False)
    return FrameStore(root / "store")


def test_short_video_rules():
    assert clip_frame_indices(5, 0, 8, "pad_last").tolist() == [0, 1, 2, 3, 4, 4, 4, 4]
    assert clip_frame_indices(4, 0, 8, "stretch").tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert clip_frame_indices(20, 3, 4, "pad_last").tolist() == [3, 4, 5, 6]


@pytest.mark.parametrize("T", [16, 64])
def test_shapes_and_samples(store, T):
    ds = ClipDataset(store, ClipSpec(frames=T, crop=48))
    n = [80, 70, 30]
    expect = sum(len(range(0, k - T + 1, T)) if k >= T else 1 for k in n)
    assert len(ds) == expect
    x = ds[0]
    assert x.shape == (3, T, 48, 48) and x.dtype == torch.float32
    drop = ClipDataset(store, ClipSpec(frames=T, crop=48, short_video="drop"))
    assert len(drop) == sum(len(range(0, k - T + 1, T)) for k in n if k >= T)


def test_normalisation_and_crop_against_the_stored_frames(store):
    spec = ClipSpec(frames=16, crop=(48, 40), random_crop=False, temporal_jitter=False)
    ds = ClipDataset(store, spec)
    x = ds[1].double()
    vid, start = ds.videos[ds.samples[1][0]].id, int(ds.samples[1][1])
    raw = store.read_frames(vid, start, 16).astype(np.float64) / 255.0  # [T, H, W, 3]
    H, W = raw.shape[1:3]
    y0, x0 = (H - 48) // 2, (W - 40) // 2
    ref = (raw[:, y0:y0 + 48, x0:x0 + 40] - np.array(spec.mean)) / np.array(spec.std)
    np.testing.assert_allclose(x.permute(1, 2, 3, 0).numpy(), ref, atol=1e-5)


def test_flip_and_random_crop_stay_inside_and_are_seeded(store):
    spec = ClipSpec(frames=16, crop=48, flip=True)
    a = ClipDataset(store, spec, seed=5)
    b = ClipDataset(store, spec, seed=5)
    c = ClipDataset(store, spec, seed=6)
    assert torch.equal(a[2], b[2])
    assert any(not torch.equal(a[i], c[i]) for i in range(len(a)))
    a.set_epoch(1)
    assert any(not torch.equal(a[i], b[i]) for i in range(len(a)))


def test_loader_with_workers_matches_single_process(store):
    ds = ClipDataset(store, ClipSpec(frames=16, crop=48, flip=True), seed=1)
    sampler = BalancedSampler(ds.datasets, ds.specialties, num_samples=8, seed=0)
    one = [b for b in make_loader(ds, batch_size=4, sampler=sampler, workers=0)]
    two = [b for b in make_loader(ds, batch_size=4, sampler=sampler, workers=2)]
    assert len(one) == 2 and one[0].shape == (4, 3, 16, 48, 48)
    for p, q in zip(one, two):
        assert torch.equal(p, q)


def test_resize_short_side(store):
    ds = ClipDataset(store, ClipSpec(frames=4, crop=32, resize_short=32))
    assert ds[0].shape == (3, 4, 32, 32)
    with pytest.raises(Exception, match="larger than the frames"):
        ClipDataset(store, ClipSpec(frames=4, crop=80))[0]


def test_uint8_output_normalised_on_device_equals_float_output(store):
    from unisurg.data.clips import normalize_batch, stack_clips

    f = ClipDataset(store, ClipSpec(frames=16, crop=48, flip=True), seed=3)
    u = ClipDataset(store, ClipSpec(frames=16, crop=48, flip=True, output="uint8"), seed=3)
    idx = list(range(len(f)))
    xf = torch.stack([f[i] for i in idx])
    xu = stack_clips([u[i] for i in idx])
    assert xu.dtype == torch.uint8 and xu.shape == xf.shape
    assert torch.equal(xu.contiguous(), torch.stack([u[i].contiguous() for i in idx]))
    torch.testing.assert_close(normalize_batch(xu), xf, rtol=0, atol=1e-5)
    batches = list(make_loader(u, batch_size=2, workers=1))  # channels-last views survive worker IPC
    torch.testing.assert_close(normalize_batch(batches[0]), xf[:2], rtol=0, atol=1e-5)


def test_batch_ring_gives_the_same_batches_and_reuses_its_memory(store):
    """make_loader(reuse_batch_memory=True): the same uint8 batches as in-process, over two epochs, in at most
    workers x slots buffers of the trainer process; a batch kept past its slot's reuse is an error, not garbage."""
    from unisurg.data.clips import stack_clips

    u = ClipDataset(store, ClipSpec(frames=4, crop=32, flip=True, stride=4, output="uint8"), seed=5)
    n = len(u)
    assert n >= 24
    want = [stack_clips([u[i] for i in range(k, min(k + 2, n))]).contiguous() for k in range(0, n, 2)]
    loader = make_loader(u, batch_size=2, workers=2, drop_last=False, prefetch_factor=2, reuse_batch_memory=True)
    storages = set()
    for _ in range(2):  # new workers each epoch: their rings start over
        got = 0
        for b, w in zip(loader, want):
            assert b.dtype == torch.uint8 and torch.equal(b.contiguous(), w)
            storages.add(b.untyped_storage().data_ptr())
            got += 1
        assert got == len(want)
    assert len(storages) <= 2 * 2 * (2 + 3)  # workers x epochs x slots: memory reused, not allocated per batch
    assert len(storages) < 2 * len(want)
    with pytest.raises(RuntimeError, match="still referenced"):
        list(loader)  # keeps every batch: the first slot comes back while its batch is still held
    kept = list(make_loader(u, batch_size=2, workers=2, drop_last=False))  # no ring: batches may be kept
    assert all(torch.equal(b.contiguous(), w) for b, w in zip(kept, want))
