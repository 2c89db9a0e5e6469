"""unisurg: surgical-video foundation models, end to end.

Pipeline: ``data`` (ingest, store, sampling, clips) -> ``models`` (video ViT, predictor)
-> ``objectives`` (UniSurg losses) -> ``train`` (pretraining) -> ``bench`` (probing, metrics)
-> ``curate`` (corpus balancing, dedup, leakage). ``cli`` is a thin front over these.
"""

__version__ = "0.1.0"


def load_encoder(path, **kwargs):
    """Load a frozen-ready video encoder from our checkpoint, an official V-JEPA 2 file or HF VJEPA2 weights.

    The returned module maps ``[B, C, T, H, W]`` to tokens ``[B, N, D]``.
    """
    from unisurg.models.checkpoint import load_encoder as _load

    return _load(path, **kwargs)
