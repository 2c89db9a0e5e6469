"""Corpus curation (SPEC section 1 and issue 6): embeddings, hierarchical k-means and balanced
selection, near-duplicate videos, benchmark leakage.

Modules:

* :mod:`~unisurg.curate.kmeans`, :mod:`~unisurg.curate.hierarchy`, :mod:`~unisurg.curate.balanced` -
  chunked k-means, hierarchical k-means (Vo et al. 2024), water-filling sampling and weights;
* :mod:`~unisurg.curate.phash`, :mod:`~unisurg.curate.duplicates`, :mod:`~unisurg.curate.leakage` -
  perceptual hashes, order-preserving alignment of hash sequences, leakage hits;
* :mod:`~unisurg.curate.embed` - ``embed_store``: clip/frame embeddings of a store, resumable shards;
* :mod:`~unisurg.curate.selection` - ``curate_selection`` writes a selection, ``load_selection``
  reads it for the trainer (``CuratedSelection.apply`` + ``restrict_clip_dataset``);
* :mod:`~unisurg.curate.store_hashes` - cached hashes of every stored frame, hashes of media files;
* :mod:`~unisurg.curate.store_dedup` - ``find_store_duplicates``, keep-one exclusion list;
* :mod:`~unisurg.curate.leakage_guard` - ``check_leakage`` writes the report, ``guard_corpus`` is the
  pretraining guard;
* :mod:`~unisurg.curate.corpus_files` - the ``STORE/curation/`` layout, ``exclude.json``,
  ``training_videos``;
* :mod:`~unisurg.curate.command` - the ``unisurg curate`` subcommands.

Names are imported on first use (``from unisurg.curate import guard_corpus``), so importing the
package, or its command module for the CLI parser, loads neither torch nor the backbones.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "align": "duplicates",
    "allocate_proportional": "hierarchy",
    "AppliedSelection": "selection",
    "area_resize": "phash",
    "assign": "kmeans",
    "balanced_sample": "balanced",
    "balanced_weights": "balanced",
    "band_candidates": "duplicates",
    "benchmark_test_media": "leakage_guard",
    "BenchmarkSplit": "leakage_guard",
    "build_selection_doc": "selection",
    "check_hashes": "duplicates",
    "check_leakage": "leakage_guard",
    "classify_pair": "store_dedup",
    "ClipEmbedder": "embed",
    "cluster_embeddings": "selection",
    "ClusterLevel": "hierarchy",
    "curate_selection": "selection",
    "CuratedSelection": "selection",
    "curation_dir": "corpus_files",
    "CurationError": "corpus_files",
    "DEFAULT_MIN_CONTRAST": "store_hashes",
    "default_selection_path": "selection",
    "dhash": "phash",
    "duplicates_path": "store_dedup",
    "embed_store": "embed",
    "embedding_folder": "embed",
    "EmbeddingIndex": "embed",
    "EmbeddingRows": "kmeans",
    "embeddings_root": "embed",
    "EmbedProtocol": "embed",
    "EmbedResult": "embed",
    "exclude_leaking_videos": "leakage_guard",
    "excluded_videos": "corpus_files",
    "exclusions_path": "corpus_files",
    "file_test_media": "leakage_guard",
    "find_embeddings": "embed",
    "find_leakage": "leakage",
    "find_near_duplicates": "duplicates",
    "find_store_duplicates": "store_dedup",
    "format_dedup_summary": "store_dedup",
    "format_leakage_summary": "leakage_guard",
    "format_selection_summary": "selection",
    "FrameHashes": "store_hashes",
    "group_duplicates": "duplicates",
    "guard_corpus": "leakage_guard",
    "hamming_matrix": "phash",
    "hamming_matrix_torch": "phash",
    "hamming_pairs": "phash",
    "hash_frame_folder": "store_hashes",
    "hash_frames": "phash",
    "hash_images": "store_hashes",
    "hash_signs": "phash",
    "hash_store_video": "store_hashes",
    "hash_test_media": "leakage_guard",
    "hash_video_file": "store_hashes",
    "hierarchical_kmeans": "hierarchy",
    "HierarchicalClustering": "hierarchy",
    "keep_one_per_duplicate_group": "store_dedup",
    "keep_one_per_group": "duplicates",
    "KeepDecision": "duplicates",
    "kmeans": "kmeans",
    "kmeans_plus_plus": "kmeans",
    "KMeansResult": "kmeans",
    "leakage_path": "leakage_guard",
    "LeakageError": "leakage_guard",
    "LeakageHit": "leakage",
    "level_specs": "selection",
    "LevelSpec": "hierarchy",
    "load_selection": "selection",
    "manifest_digest": "corpus_files",
    "match_videos": "duplicates",
    "media_cache_dir": "store_hashes",
    "media_hashes": "store_hashes",
    "media_short_side": "store_hashes",
    "Metric": "kmeans",
    "nearest_centroid": "kmeans",
    "nearest_hamming": "phash",
    "normalize_rows": "kmeans",
    "pack_bits": "phash",
    "parse_benchmark": "leakage_guard",
    "parse_levels": "selection",
    "phash": "phash",
    "phash_path": "store_hashes",
    "plan_samples": "embed",
    "read_duplicates": "store_dedup",
    "read_exclusions": "corpus_files",
    "read_leakage_report": "leakage_guard",
    "resample_points": "hierarchy",
    "resolve_embeddings": "selection",
    "restrict_clip_dataset": "selection",
    "rng_seed": "kmeans",
    "rows_per_cluster": "kmeans",
    "Segment": "duplicates",
    "segments_of": "duplicates",
    "select_rows": "selection",
    "SelectionMismatchError": "selection",
    "store_hashes": "store_hashes",
    "store_rate": "store_hashes",
    "TestMedia": "leakage_guard",
    "to_gray": "phash",
    "training_videos": "corpus_files",
    "unpack_bits": "phash",
    "update_centroids": "kmeans",
    "update_exclusions": "corpus_files",
    "video_signature": "corpus_files",
    "VideoMatch": "duplicates",
    "water_fill": "balanced",
    "water_fill_cap": "balanced",
    "water_fill_groups": "balanced",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'unisurg.curate' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"unisurg.curate.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
