"""Benchmark of frozen backbones by attentive probing (docs/benchmark.md).

Modules (imported on demand; ``import unisurg.evaluation`` itself loads nothing heavy):

* :mod:`~unisurg.evaluation.runner` - ``run_benchmark``, ``extract_features``: the whole pipeline;
* :mod:`~unisurg.evaluation.bench_config` - ``BenchConfig`` / ``load_bench_config`` (presets ``paper``, ``tiny``);
* :mod:`~unisurg.evaluation.probe`, :mod:`~unisurg.evaluation.probe_layers`, :mod:`~unisurg.evaluation.probe_optim`,
  :mod:`~unisurg.evaluation.task_losses`, :mod:`~unisurg.evaluation.probe_training` - P stacked probes and their training;
* :mod:`~unisurg.data.pixels`, :mod:`~unisurg.data.media_store`, :mod:`~unisurg.backbones.features` - the clip
  protocol, the frame store of the benchmark media, the frozen-feature cache;
* :mod:`~unisurg.evaluation.tasks`, :mod:`~unisurg.evaluation.head_selection` - tasks, metrics, probe selection, CIs;
* :mod:`~unisurg.evaluation.report`, :mod:`~unisurg.evaluation.figures` - tables and figures;
* :mod:`~unisurg.evaluation.predict` - ``predict_video``, ``embed_video``;
* :mod:`~unisurg.evaluation.command` - the ``bench``, ``extract``, ``predict``, ``embed`` subcommands;
* :mod:`~unisurg.datasets`, :mod:`~unisurg.evaluation.metrics`, :mod:`~unisurg.backbones.registry` - dataset
  adapters, metrics, backbone registry.
"""
