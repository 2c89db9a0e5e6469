"""Batch memory that DataLoader workers reuse instead of allocating shared memory for every batch.

A worker's batch travels to the trainer in shared memory. Allocated fresh for each batch (what
``default_collate`` and a plain :func:`~unisurg.data.clips.stack_clips` do), every page is faulted in
and zeroed by the kernel, and the trainer maps a newly passed file descriptor: 5.5 ms for a
4 x 16 x 224 x 224 x 3 uint8 batch against 0.12 ms to refill a buffer already mapped (measured on this
project's CPU), some 10% of the clip-loading time. :class:`RingCollate` gives each worker a ring of
buffers instead: batch ``k`` of a worker is written into slot ``k mod slots``; the trainer receives
the slot's storage once (the first time the slot is used, or when it has to grow) and afterwards only
the slot's name, and views its cached mapping.

The price is a lifetime rule: a batch's memory is overwritten ``slots`` batches of the same worker
later. The DataLoader keeps at most ``prefetch_factor`` batches per worker in flight, so with
``slots = prefetch_factor + 3`` the batch the loop is working on, and the one before it, stay intact.
A consumer that keeps batches longer (``list(loader)``) must copy them; it is stopped with an error
naming this rule when a slot comes back while a tensor still uses it. So the ring is opt-in
(``make_loader(..., reuse_batch_memory=True)``), on in the pretraining loader, which uses each batch
for one step.
"""

from __future__ import annotations

import secrets
import weakref
from typing import Any

import torch

_ACTIVE: _WorkerRing | None = None  # the ring of the collate call running in this (worker) process
_RECEIVED: dict[tuple, torch.UntypedStorage] = {}  # trainer side: (ring, worker, slot, part) -> storage
_RING_SLOTS: dict[str, int] = {}  # trainer side: ring -> slots (for the error message)


class _WorkerRing:
    """A worker's slots; each collate call takes the next slot, each buffer it asks for one part of it."""

    def __init__(self, slots: int):
        self.slots = slots
        self.storages: dict[tuple[int, int], torch.UntypedStorage] = {}
        self.sent: set[tuple[int, int]] = set()  # parts whose current storage the trainer has
        self.call = -1
        self.part = 0
        self.handed_out: list[tuple[int, int, torch.UntypedStorage]] = []

    def begin(self) -> None:
        self.call += 1
        self.part = 0
        self.handed_out = []

    def buffer(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        key = (self.call % self.slots, self.part)
        self.part += 1
        nbytes = max(1, torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size())
        st = self.storages.get(key)
        if st is None or st.nbytes() < nbytes:
            st = torch.UntypedStorage._new_shared(nbytes)
            self.storages[key] = st
            self.sent.discard(key)
        self.handed_out.append((*key, st))
        return torch.empty(0, dtype=dtype).set_(st, 0, shape)


class _SlotTensor:
    """A tensor in a ring slot, as the worker sends it: the storage the first time, then only its name."""

    def __init__(self, key: tuple, t: torch.Tensor, storage: torch.UntypedStorage | None):
        self.key, self.storage = key, storage
        self.meta = (t.dtype, t.storage_offset(), tuple(t.shape), tuple(t.stride()))

    def __reduce__(self):
        return _view_of_slot, (self.key, self.storage, self.meta)


def _view_of_slot(key: tuple, storage: torch.UntypedStorage | None, meta) -> torch.Tensor:
    """Trainer side: the tensor, viewed on the slot's storage (received now, or cached from before)."""
    if storage is not None:
        _RECEIVED[key] = storage
    else:
        storage = _RECEIVED.get(key)
        if storage is None:
            raise RuntimeError(f"batch ring: slot {key} arrived without its memory ever having been sent; "
                               "a ring batch can only be unpickled in the process that iterates the loader")
        if torch._C._storage_Use_Count(storage._cdata) > 1:  # the cache's own reference is the only one allowed
            raise RuntimeError(
                "batch ring: a batch from this loader is still referenced while its memory is being reused (it was "
                f"fetched {_RING_SLOTS.get(key[0], '?')} batches of its worker ago), so it now holds another batch's "
                "clips. Copy batches you keep (batch.clone()), or build the loader with reuse_batch_memory=False")
    dtype, offset, shape, stride = meta
    return torch.empty(0, dtype=dtype).set_(storage, offset, shape, stride)


def _forget(ring_id: str) -> None:
    for key in [k for k in _RECEIVED if k[0] == ring_id]:
        del _RECEIVED[key]
    _RING_SLOTS.pop(ring_id, None)


def ring_buffer(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor | None:
    """A batch buffer from the running collate call's ring, or None outside one (allocate as usual)."""
    return None if _ACTIVE is None else _ACTIVE.buffer(shape, dtype)


class RingCollate:
    """Wraps a collate function so that, in a worker, its batch buffers (:func:`ring_buffer`) come from a ring.

    In the main process (``num_workers=0``) it is the wrapped function unchanged.
    """

    def __init__(self, collate_fn, slots: int):
        if slots < 2:
            raise ValueError(f"batch ring: {slots} slots; need at least 2")
        self.collate_fn, self.slots = collate_fn, slots
        self.ring_id = secrets.token_hex(4)  # fresh per loader: entries of two loaders never mix
        self._ring: _WorkerRing | None = None
        _RING_SLOTS[self.ring_id] = slots
        weakref.finalize(self, _forget, self.ring_id)  # the loader is gone: drop the storages it received

    def __getstate__(self):
        return {**self.__dict__, "_ring": None}

    def __call__(self, batch: list) -> Any:
        global _ACTIVE
        info = torch.utils.data.get_worker_info()
        if info is None:
            return self.collate_fn(batch)
        if self._ring is None:
            self._ring = _WorkerRing(self.slots)
        ring = self._ring
        ring.begin()
        _ACTIVE = ring
        try:
            out = self.collate_fn(batch)
        finally:
            _ACTIVE = None
        if not ring.handed_out:
            return out
        by_ptr = {st.data_ptr(): (slot, part, st) for slot, part, st in ring.handed_out}
        return _wrap(out, by_ptr, ring, (self.ring_id, info.id))


def _wrap(obj, by_ptr: dict, ring: _WorkerRing, prefix: tuple):
    """Replace the ring-backed tensors in a collated batch (tuples, lists, dicts) by :class:`_SlotTensor`."""
    if isinstance(obj, torch.Tensor):
        hit = by_ptr.get(obj.untyped_storage().data_ptr())
        if hit is None:
            return obj
        slot, part, st = hit
        first = (slot, part) not in ring.sent
        ring.sent.add((slot, part))
        return _SlotTensor((*prefix, slot, part), obj, st if first else None)
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_wrap(o, by_ptr, ring, prefix) for o in obj)
    if isinstance(obj, list):
        return [_wrap(o, by_ptr, ring, prefix) for o in obj]
    if isinstance(obj, dict):
        return {k: _wrap(v, by_ptr, ring, prefix) for k, v in obj.items()}
    return obj
