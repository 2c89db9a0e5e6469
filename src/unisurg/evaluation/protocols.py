"""Named benchmark protocols: typed presets that set every item of a published protocol at once.

``unisurg bench --protocol NAME`` resolves a :class:`~unisurg.evaluation.bench_config.BenchConfig` in three
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
from pathlib import Path

import yaml

from unisurg.evaluation.bench_config import BenchConfig, load_bench_config
from unisurg.typed_config import ConfigError, to_dict


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
    # False for the default protocol: its items are BenchConfig's defaults, so a --config file's values are kept
    apply: bool = True

    def overrides(self) -> list[str]:
        """The items as ``key=value`` overrides (YAML values), in item order (none when ``apply`` is False)."""

        if not self.apply:
            return []
        out = []
        for it in self.items:
            for k, v in it.settings.items():
                out.append(f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}")
        return out


SM = "CAIR-HKISI/SurgMotion"
SR = "Siiichenggg/SurgRec-open-source"
SM_EVAL = "evals/foundation_phase_probing/eval.py"
SR_FT = "surgrec_video/entrypoints/run_class_finetuning_videomae.py"

UNISURG = Protocol("unisurg", "our honest default: probe chosen on validation, both metric conventions reported", (
    ProtocolItem("head selection", {"train.selection_metric": "auto", "train.validation": "carve"}, "ours",
                 "chosen on validation (carved from training videos, 20% by name, when the dataset has none); the "
                 "choice on test is reported beside, labelled"),
    ProtocolItem("metric convention", {}, "ours",
                 "phase: macro over ground-truth phases per video (gt), and scikit-learn's set (gt_or_pred) beside"),
    ProtocolItem("bootstrap", {"report.bootstrap": "percentile"}, "ours",
                 "point = the test-set statistic; percentile 95% CI over videos (default_rng(42), 1000 resamples)"),
    ProtocolItem("clip", {"clip.field_of_view": "short_side", "clip.positions": "consecutive", "clip.start": "first"},
                 "ours", "aspect kept (short side 292, centre crop 256); T consecutive frames; start padded with the "
                         "first frame (no future frame in an online clip)"),
    ProtocolItem("augmentation", {"clip.augment": "none", "features.online": False}, "ours",
                 "frozen features cached once (fast); augmentation is an option"),
    ProtocolItem("optimiser", {"train.decay_all": False, "train.grid_order": "lr_major", "train.schedule_step": "after",
                               "train.amp_dtype": "bfloat16"}, "ours",
                 "no weight decay on biases / norms; bf16 autocast (no scaler needed)"),
    ProtocolItem("probe format", {"probe.kind": "attentive", "probe.cross_proj": True, "probe.eps": 1e-6,
                                  "probe.init": "unisurg"}, "ours",
                 "V-JEPA 2 probe with an output projection after the cross-attention, eps 1e-6"),
), apply=False)

SURGMOTION = Protocol("surgmotion", f"the phase-probing protocol of {SM}'s released code (SPEC Sec. 9)", (
    ProtocolItem("metric convention", {"report.paper_selection_metric": "auto"}, "code",
                 f"{SM_EVAL} evaluate_per_video: per video scikit-learn average='macro' with the default label set "
                 "(gt_or_pred), zero_division=0; the tables show both conventions"),
    ProtocolItem("bootstrap", {"report.bootstrap": "surgmotion", "report.bootstrap_n": 1000,
                               "report.bootstrap_seed": 42}, "code",
                 "evals/utils/bootstrap.py: RandomState(42).choice over videos, 1000 resamples; point = mean of the "
                 "bootstrap means; Std = bootstrap standard error"),
    ProtocolItem("head selection", {"train.selection_metric": "f1_gt_or_pred", "train.validation": "none"}, "code",
                 f"{SM_EVAL}: the best of the heads by Macro_F1_Mean on the test CSV; no validation split (Cholec80 "
                 "trains on videos 1-40): the result is labelled 'selected on test'"),
    ProtocolItem("Cholec80 split", {}, "code",
                 "train videos 1-40, test 41-80 (split scheme 40_40, set by the protocol when --split-scheme is not "
                 "given)"),
    ProtocolItem("clip", {"clip.frames": 64, "clip.fps": 1.0, "clip.anchor": "online", "clip.res": 256,
                          "clip.short_side": 292, "clip.norm": "imagenet"}, "code",
                 "64 frames at 1 fps ending at the labelled second; ImageNet mean/std (src/datasets/video_surgical.py)"),
    ProtocolItem("field of view", {"clip.field_of_view": "squash"}, "code",
                 "video_surgical.py load_frames_from_txt: every frame resized to 512x512 (aspect not kept), then "
                 "resize 292 and centre crop 256: 87.7% of a 16:9 frame's width (ours: 49%)"),
    ProtocolItem("frame positions", {"clip.positions": "surgmotion"}, "code",
                 "video_surgical.py: linspace(0, 63, 63).astype(int64) + [63] over the 64-frame clip list: frame 62 "
                 "dropped, 63 repeated"),
    ProtocolItem("start of video", {"clip.start": "last"}, "code",
                 "released clip CSVs (made by gen_clips.py, not in the repository) pad at the end: frames 0..t then the "
                 "last repeated; the historical data_process/process_csv_dense.py makes no clip before t = 63 "
                 "(clip.start=skip: the first 63 s are not scored). Both readings are options"),
    ProtocolItem("augmentation", {"clip.augment": "paper", "features.online": True}, "code",
                 "RandAugment rand-m7-n4-mstd0.5-inc1, random resized crop (0.08-1), random erasing 0.25, no flip; "
                 "the frozen encoder runs online on the augmented clips"),
    ProtocolItem("loss", {"train.class_weighting": True, "train.label_smoothing": 0.0}, "code",
                 "cross-entropy with class-balanced weights from the training labels"),
    ProtocolItem("optimiser", {"train.lrs": [5e-3, 3e-3, 1e-3, 3e-4, 1e-4], "train.wds": [0.01, 0.1, 0.4, 0.8],
                               "train.grid_order": "wd_major", "train.decay_all": True, "train.warmup_fraction": 0.0,
                               "train.schedule_step": "before", "train.batch_size": 4, "train.epochs": 1}, "code",
                 f"{SM_EVAL} init_opt: one AdamW per head over all its parameters (weight decay on biases and norms "
                 "too), 20 heads wd-major (configs/*: 5 lrs per wd), cosine to 0 without warmup, scheduler stepped "
                 "before each update; batch 4, 1 epoch"),
    ProtocolItem("precision", {"train.amp": True, "train.amp_dtype": "float16"}, "code",
                 f"{SM_EVAL}: torch.amp.autocast(float16) + one GradScaler per head on CUDA (ours: one for all heads)"),
    ProtocolItem("probe format", {"probe.kind": "attentive", "probe.cross_proj": False, "probe.eps": 1e-5,
                                  "probe.init": "vjepa2", "probe.depth": 4, "probe.heads": 16}, "code",
                 "src/models/attentive_pooler.py (V-JEPA 2 AttentiveClassifier): 3 self-attention + 1 cross block, no "
                 "cross-attention output projection, nn.LayerNorm eps 1e-5, trunc_normal std 0.02, residual rescale"),
))

SURGREC = Protocol("surgrec", f"the benchmark {SR}'s paper scripts actually run (SPEC Sec. 9)", (
    ProtocolItem("frozen backbone, linear head", {"probe.kind": "linear", "features.mode": "pooled"}, "code",
                 f"{SR_FT}: --frozen_backbone is type=bool default=True (always frozen); only `head` trains, on "
                 "fc_norm = a fresh LayerNorm (eps 1e-6, identity affine, frozen) of the mean-pooled tokens; head "
                 "init trunc_normal(0.02) x 0.001. Ours pools the tokens after the backbone's final norm"),
    ProtocolItem("clip", {"clip.frames": 16, "clip.res": 224, "clip.short_side": 224, "clip.norm": "imagenet",
                          "clip.sampling": "stride", "clip.sampling_rate": 4}, "code",
                 f"{SR_FT} / scripts/paper/finetune/*.sh: 16 frames at sampling rate 4, 224 px (336 for the DINOv3 "
                 "runs), short side 224; VideoMAE's ImageNet mean/std"),
    ProtocolItem("optimiser", {"train.lrs": [5e-4], "train.wds": [0.05], "train.lr_batch_scaling": True,
                               "train.batch_size": 64, "train.epochs": 50, "train.warmup_fraction": 0.1,
                               "train.decay_all": False, "train.grid_order": "lr_major"}, "code",
                 f"{SR_FT}: AdamW lr 5e-4 x total batch / 256 (8 GPUs x 8), wd 0.05 (not on biases / norms), 50 "
                 "epochs, 5 warm-up epochs, cosine (to min_lr 1e-6 there, 0 here)"),
    ProtocolItem("augmentation", {"clip.augment": "paper", "features.online": True}, "code",
                 "RandAugment rand-m7-n4-mstd0.5-inc1, random resized crop (0.08-1), random erasing 0.25 (VideoMAE's "
                 "loader also flips horizontally: not reproduced)"),
    ProtocolItem("mixing and smoothing", {"train.mixup_alpha": 0.8, "train.cutmix_alpha": 1.0,
                                          "train.mix_switch_prob": 0.5, "train.label_smoothing": 0.1,
                                          "train.class_weighting": False}, "code",
                 "timm Mixup (mixup 0.8, cutmix 1.0, switch 0.5, batch mode), label smoothing 0.1, soft-target "
                 "cross-entropy, no class weights"),
    ProtocolItem("test views", {"clip.test_temporal_views": 5, "clip.test_spatial_views": 3}, "code",
                 "5 temporal segments x 3 spatial crops per test clip, softmax averaged"),
    ProtocolItem("metrics", {"report.paper_selection_metric": "accuracy", "train.epoch_snapshots": True}, "code",
                 "top-1 accuracy (and macro-F1 here); test.csv is their validation set for 14 of 16 datasets, so the "
                 "checkpoint (epoch) is chosen on test when evaluation during training is on (the paper scripts pass "
                 "--disable_eval_during_finetuning and evaluate the last epoch); every epoch is a candidate here, "
                 "chosen on validation (honest) and, labelled, on test"),
    ProtocolItem("bootstrap", {"report.bootstrap": "percentile"}, "ours", "SurgRec reports no interval; ours is added"),
))

# split scheme a protocol uses for a dataset when --split-scheme is not given
PROTOCOL_SPLITS: dict[str, dict[str, str]] = {"surgmotion": {"cholec80": "40_40"}}

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


def protocol_split_scheme(protocol: str, dataset: str) -> str | None:
    """The split scheme ``protocol`` uses for ``dataset`` (None: the adapter's default)."""
    return PROTOCOL_SPLITS.get(protocol, {}).get(dataset)


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


def write_protocol_record(cfg: BenchConfig, out) -> Path:
    """``OUT/protocol_<name>.md``: the protocol's table (:func:`explain`), the items whose resolved value differs
    from the protocol's (user overrides, e.g. a toy scale), and the whole resolved configuration (YAML)."""

    proto = get_protocol(cfg.protocol)
    resolved = to_dict(cfg)
    changed = []
    for it in proto.items:
        for key, want in it.settings.items():
            got = resolved
            for part in key.split("."):
                got = got[part]
            if got != want and not (isinstance(want, float) and isinstance(got, float) and abs(got - want) < 1e-15):
                changed.append(f"| {key} | {want} | {got} |")
    text = [explain(cfg.protocol), ""]
    if changed:
        text += ["Items overridden in this run (protocol value -> resolved value):", "",
                 "| key | protocol | resolved |", "|---|---|---|", *changed, ""]
    text += ["Resolved configuration:", "", "```yaml", yaml.safe_dump(resolved, sort_keys=False).rstrip(), "```", ""]
    path = Path(out) / f"protocol_{proto.name}.md"
    path.write_text("\n".join(text))
    return path
