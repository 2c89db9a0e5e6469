"""Corpus curation (SurgRec's balanced sampling, Vo et al. 2024; docs/curation.md): embeddings, hierarchical k-means and balanced
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
* :mod:`~unisurg.curate.leakage_check` - ``check_leakage`` writes ``STORE/curation/leakage.json``
  (pretraining's guard, :mod:`unisurg.train.leakage_guard`, only reads it);
* :mod:`~unisurg.curate.corpus_files` - the ``STORE/curation/`` layout, ``exclude.json``,
  ``training_videos``;
* :mod:`~unisurg.curate.command` - the ``unisurg curate`` subcommands.
"""
