"""unisurg: surgical-video foundation models, end to end.

Layers, each importing only those before it (``tests/test_import_graph.py`` checks this):
``data`` (ingest, store, clips, sampling) and ``synth`` (the synthetic world) -> ``models`` (video ViT,
predictor, image trunks) -> ``objectives`` (the papers' losses) -> ``datasets`` (benchmark adapters) and
``backbones`` (spec strings, loaders, frozen features) -> ``curate`` (embeddings, k-means, dedup, leakage)
-> ``train`` (pretraining) -> ``evaluation`` (probes, tasks, metrics, reports) -> ``demo`` -> ``cli``.
See ``docs/layout.md``.
"""

from unisurg._version import __version__
from unisurg.models.checkpoint import load_encoder

__all__ = ["__version__", "load_encoder"]
