"""unisurg: surgical-video foundation models, end to end.

Layers, each importing only those before it (``tests/test_import_graph.py`` checks this):
``data`` (ingest, store, clips, sampling) and ``synth`` (the synthetic world) -> ``models`` (video ViT,
predictor, image trunks) -> ``objectives`` (the papers' losses) -> ``datasets`` (benchmark adapters) and
``backbones`` (spec strings, loaders, frozen features) -> ``curate`` (embeddings, k-means, dedup, leakage)
-> ``train`` (pretraining) -> ``evaluation`` (probes, tasks, metrics, reports) -> ``demo`` -> ``cli``.
See ``docs/layout.md``.
"""

from unisurg._version import __version__


def load_encoder(path, **kwargs):
    """Load a frozen-ready video encoder from our checkpoint, an official V-JEPA 2 file or HF VJEPA2 weights.

    The returned module maps ``[B, C, T, H, W]`` to tokens ``[B, N, D]``.
    """
    from unisurg.models.checkpoint import load_encoder as _load

    return _load(path, **kwargs)
