"""Benchmark of frozen backbones by attentive probing (SPEC Sec. 5).

Modules (imported on demand; ``import unisurg.bench`` itself loads nothing heavy):

* :mod:`~unisurg.bench.runner` - ``run_benchmark``, ``extract_features``: the whole pipeline;
* :mod:`~unisurg.bench.config` - ``BenchConfig`` / ``load_bench_config`` (presets ``paper``, ``tiny``);
* :mod:`~unisurg.bench.probe`, :mod:`~unisurg.bench.batched`, :mod:`~unisurg.bench.optim`,
  :mod:`~unisurg.bench.losses`, :mod:`~unisurg.bench.probe_training` - P stacked probes and their training;
* :mod:`~unisurg.bench.pixels`, :mod:`~unisurg.bench.frames`, :mod:`~unisurg.bench.features` - the clip
  protocol, the frame store of the benchmark media, the frozen-feature cache;
* :mod:`~unisurg.bench.tasks`, :mod:`~unisurg.bench.selection` - tasks, metrics, probe selection, CIs;
* :mod:`~unisurg.bench.report`, :mod:`~unisurg.bench.figures` - tables and figures;
* :mod:`~unisurg.bench.predict` - ``predict_video``, ``embed_video``;
* :mod:`~unisurg.bench.command` - the ``bench``, ``extract``, ``predict``, ``embed`` subcommands;
* :mod:`~unisurg.bench.datasets`, :mod:`~unisurg.bench.metrics`, :mod:`~unisurg.bench.backbones` - dataset
  adapters, metrics, backbone registry.
"""
