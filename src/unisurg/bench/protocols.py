"""Named benchmark protocols: typed presets that set every item of a published protocol at once.

``unisurg bench --protocol NAME`` resolves a :class:`~unisurg.bench.config.BenchConfig` in three
layers: the ``--config`` preset or file (scale: ``paper`` or ``tiny``), then the protocol's items,
then the user's ``key=value`` overrides (a user override always wins, and is recorded). The run's
``config`` dump (``results.json``, ``run.json``) holds every resolved item and ``protocol``.

* ``unisurg`` (default, honest): the probe is chosen on validation (carved from training when a
  dataset has none); both metric conventions are reported and named.
* ``surgmotion``: what CAIR-HKISI/SurgMotion's released code does (SPEC Sec. 9), item by item.
* ``surgrec``: what Siiichenggg/SurgRec-open-source's scripts actually run (SPEC Sec. 9).

Each item names its source: ``paper`` (the paper's text), ``code`` (the authors' released code,
file given), ``ours`` (our choice). ``--explain`` prints the table (:func:`explain`).
"""

from __future__ import annotations

from dataclasses import dataclass

from unisurg.bench.config import BenchConfig, load_bench_config
from unisurg.config import ConfigError


@dataclass(frozen=True)
class ProtocolItem:
    """One item of a protocol: what it is, the config keys that set it, and where it comes from."""

    item: str  # short name, e.g. "metric convention"
    settings: dict  # dotted config key -> value
    source: str  # "paper" | "code" | "ours"
    evidence: str  # file / section the value was read from, or why we chose it


@dataclass(frozen=True)
class Protocol:
    name: str
    summary: str
    items: tuple[ProtocolItem, ...]

    def overrides(self) -> list[str]:
        """The items as ``key=value`` overrides (YAML values), in item order."""
        import yaml

        out = []
        for it in self.items:
            for k, v in it.settings.items():
                out.append(f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}")
        return out


SM = "CAIR-HKISI/SurgMotion"
SR = "Siiichenggg/SurgRec-open-source"

UNISURG = Protocol("unisurg", "our honest default: probe chosen on validation, both metric conventions reported", (
    ProtocolItem("selection", {"train.selection_metric": "auto"}, "ours",
                 "chosen on validation (carved from training videos when the dataset has none); never on test"),
    ProtocolItem("metric convention", {}, "ours",
                 "phase macro averages over ground-truth phases (gt) and, beside, scikit-learn's set (gt_or_pred)"),
    ProtocolItem("bootstrap", {"report.bootstrap": "percentile", "report.bootstrap_n": 1000,
                               "report.bootstrap_seed": 42}, "ours",
                 "point = test-set statistic; percentile 95% CI over videos"),
))

SURGMOTION = Protocol("surgmotion", f"the phase-probing protocol of {SM}'s released code (SPEC Sec. 9)", (
    ProtocolItem("metric convention", {"report.paper_selection_metric": "auto"}, "code",
                 "evals/foundation_phase_probing/eval.py evaluate_per_video: scikit-learn average='macro', default "
                 "labels (gt_or_pred), zero_division=0"),
    ProtocolItem("bootstrap", {"report.bootstrap": "surgmotion", "report.bootstrap_n": 1000,
                               "report.bootstrap_seed": 42}, "code",
                 "evals/utils/bootstrap.py: RandomState(42).choice over videos, 1000 resamples, point = mean of "
                 "bootstrap means, Std = bootstrap standard error"),
    ProtocolItem("head selection", {"train.selection_metric": "f1_gt_or_pred"}, "code",
                 "eval.py: best head = max Macro_F1_Mean on the test CSV (reported as chosen ON TEST)"),
    ProtocolItem("probe format", {"probe.cross_proj": False, "probe.eps": 1e-5, "probe.init": "vjepa2",
                                  "probe.depth": 4, "probe.heads": 16}, "code",
                 "src/models/attentive_pooler.py (V-JEPA 2 AttentiveClassifier): no xattn output projection, "
                 "nn.LayerNorm eps 1e-5, trunc_normal std 0.02, residual rescale"),
))

SURGREC = Protocol("surgrec", f"the benchmark {SR}'s paper scripts actually run (SPEC Sec. 9)", (
    ProtocolItem("bootstrap", {"report.bootstrap": "percentile"}, "ours",
                 "SurgRec reports no interval; ours is added"),
))

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (UNISURG, SURGMOTION, SURGREC)}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def protocol_config(name: str = "unisurg", base: str | dict | None = None,
                    overrides: list[str] | None = None) -> BenchConfig:
    """``BenchConfig`` of protocol ``name`` on top of ``base`` (a preset name, YAML file or dict; default
    ``paper``), then ``overrides`` (the user's, which win)."""
    proto = get_protocol(name)
    return load_bench_config(base, proto.overrides() + [f"protocol={name}"] + list(overrides or []))


def explain(name: str) -> str:
    """Markdown table of a protocol's items: item, settings, source (paper / authors' code / ours), evidence."""
    proto = get_protocol(name)
    label = {"paper": "paper", "code": "authors' code", "ours": "ours"}
    lines = [f"Protocol {proto.name}: {proto.summary}", "",
             "| item | settings | source | evidence |", "|---|---|---|---|"]
    for it in proto.items:
        settings = ", ".join(f"{k}={v}" for k, v in it.settings.items()) or "(always on)"
        lines.append(f"| {it.item} | {settings} | {label[it.source]} | {it.evidence} |")
    return "\n".join(lines)
