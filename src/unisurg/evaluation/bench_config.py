"""``BenchConfig``: the benchmark's typed configuration (clip protocol, probe, training, features, report).

Defaults are the phase-recognition protocol of the authors' release (docs/benchmark.md): T = 64 frames
at 1 fps ending at the labelled second, short side 256 * res / 224 then a centre crop to res = 256,
ImageNet mean/std (or the backbone's), all patch tokens to a 4-block, 16-head attentive probe,
20 probes (lr x wd grid), AdamW, cosine to 0, batch 4, 1 epoch, class-balanced cross-entropy,
bootstrap 1000 x seed 42. ``load_bench_config("tiny", ["train.epochs=3"])`` for tests and CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from unisurg.typed_config import load_config, to_dict, yaml_presets


@dataclass
class ClipConfig:
    """How a sample becomes pixels."""

    frames: int = 64  # T: frames per clip
    res: int = 256  # centre-crop size (256 for the V-JEPA family)
    fps: float = 1.0  # frames per second of the clip (and of the frame store for per-second tasks)
    anchor: Literal["online", "offline"] = "online"  # clip ends at the labelled second / is centred on it
    short_side: int | None = None  # resize short side before the crop; None = int(256 * res / 224) (292 for 256)
    clip_fps: float = 4.0  # frame-store rate for short-clip tasks (actions, skill): T frames spread over the clip
    frame_folder_fps: float | None = None  # rate of a dataset's frame folders; None = the record's fps_source (else 1)
    norm: Literal["backbone", "imagenet"] = "backbone"  # mean/std of the backbone, or ImageNet's
    # field of view: "short_side" keeps the aspect ratio (a 16:9 frame shows 49% of its width at res 256);
    # "squash" (SurgMotion) resizes each frame to a square of the resize size first (87.7% of the width, squeezed)
    field_of_view: Literal["short_side", "squash"] = "short_side"
    # which frames of the T-frame window: "consecutive", or "surgmotion" = their loader's linspace(0, T-1, T-1) + last
    positions: Literal["consecutive", "surgmotion"] = "consecutive"
    # a clip reaching before the first frame: "first" = repeat the first frame (ours), "last" = frames 0..t then the
    # last repeated (SurgMotion's released clip lists), "skip" = no clip, the second is not scored (their historical
    # data_process/process_csv_dense.py makes no clip before t = T - 1)
    start: Literal["first", "last", "skip"] = "first"
    # training augmentation (needs features.online=true): none; rrc = random-resized crop; paper = the authors'
    # RandAugment + random-resized crop + random erasing (unisurg.data.augment)
    augment: Literal["none", "rrc", "paper"] = "none"
    rrc_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # random-resized-crop area range [lo, hi]
    rrc_ratio: list[float] = field(default_factory=lambda: [0.75, 4 / 3])  # aspect-ratio range [lo, hi]
    randaug_n: int = 4  # paper: RandAugment ops per clip (drawn with replacement, each applied with p = 0.5)
    randaug_m: float = 7.0  # paper: RandAugment magnitude, 0..10
    randaug_mstd: float = 0.5  # paper: std of the per-op magnitude noise (timm "mstd"; 0 = exactly m)
    randaug_increasing: bool = True  # paper: timm's "inc1" op list (every op stronger with magnitude)
    erase_prob: float = 0.25  # paper: probability of one random-erasing rectangle per clip
    jpeg_quality: int = 90  # frame-store JPEG quality
    # short-clip tasks: "spread" = T frames spread over the clip (ours); "stride" = T frames every sampling_rate stored
    # frames from a centred window (VideoMAE / SurgRec), test_temporal_views windows evenly spaced at test
    sampling: Literal["spread", "stride"] = "spread"
    sampling_rate: int = 4
    test_temporal_views: int = 1  # SurgRec: 5 windows per test clip
    test_spatial_views: int = 1  # SurgRec: 3 crops along the long side (top/left, centre, bottom/right); softmax averaged

    def validate(self) -> None:
        if self.frames < 1:
            raise ValueError(f"clip.frames={self.frames} must be >= 1")
        if self.res < 8:
            raise ValueError(f"clip.res={self.res} is too small")
        if self.fps <= 0 or self.clip_fps <= 0:
            raise ValueError("clip.fps and clip.clip_fps must be positive")
        if len(self.rrc_scale) != 2 or len(self.rrc_ratio) != 2:
            raise ValueError("clip.rrc_scale and clip.rrc_ratio take two numbers [lo, hi]")
        if not 0 < self.rrc_scale[0] <= self.rrc_scale[1] <= 1:
            raise ValueError(f"clip.rrc_scale={self.rrc_scale}: need 0 < lo <= hi <= 1")
        if not 0 < self.rrc_ratio[0] <= self.rrc_ratio[1]:
            raise ValueError(f"clip.rrc_ratio={self.rrc_ratio}: need 0 < lo <= hi")
        if self.randaug_n < 0:
            raise ValueError(f"clip.randaug_n={self.randaug_n} must be >= 0 (0 = no RandAugment op)")
        if not 0 <= self.randaug_m <= 10:
            raise ValueError(f"clip.randaug_m={self.randaug_m} must be in [0, 10] (timm's magnitude scale)")
        if self.randaug_mstd < 0:
            raise ValueError(f"clip.randaug_mstd={self.randaug_mstd} must be >= 0")
        if self.sampling_rate < 1 or self.test_temporal_views < 1 or self.test_spatial_views < 1:
            raise ValueError("clip.sampling_rate, clip.test_temporal_views and clip.test_spatial_views must be >= 1")
        if not 0 <= self.erase_prob <= 1:
            raise ValueError(f"clip.erase_prob={self.erase_prob} must be a probability in [0, 1]")

    @property
    def resize_short(self) -> int:
        return self.short_side if self.short_side is not None else int(256 * self.res / 224)


@dataclass
class ProbeConfig:
    # blocks: depth-1 self-attention + 1 cross-attention. 20 probes against one, with the frozen forward,
    # at the papers' sizes (benchmarks/probe_heads.py): 4 = V-JEPA 2's, 4.5-6.3x (FLOP-bound); 1 = V-JEPA 1's
    # cross-attention-only probe, 1.1-1.3x; depth 4 with width=256, 1.4-2.2x
    depth: int = 4
    heads: int = 16
    width: int | None = None  # None = the backbone's embed_dim (no input projection)
    mlp_ratio: float = 4.0
    decoder_hidden: int = 256  # dense tasks: hidden width of the light decoder
    checkpoint: bool = False  # activation checkpointing of the self-attention blocks (memory at scale)
    # the official V-JEPA 2 / SurgMotion probe: cross_proj=false, eps=1e-5, init=vjepa2 (unisurg.evaluation.official_probe)
    cross_proj: bool = True  # output projection after the cross-attention (ours; the official probe has none)
    eps: float = 1e-6  # LayerNorm eps of the probe (the official probe: torch's default 1e-5)
    init: Literal["unisurg", "vjepa2"] = "unisurg"  # weight init and residual rescale (unisurg.evaluation.probe)
    # evaluate the heads of an official checkpoint ({"classifiers": [state_dict, ...]}) instead of training probes;
    # the heads take the places of train.lrs x train.wds (as many as the checkpoint has)
    official: str | None = None
    # "attentive" (V-JEPA 2's probe); "linear" = SurgRec's head: Linear on a LayerNorm of the mean-pooled tokens
    kind: Literal["attentive", "linear"] = "attentive"

    def validate(self) -> None:
        if self.depth < 1 or self.heads < 1:
            raise ValueError("probe.depth and probe.heads must be >= 1")
        if self.eps <= 0:
            raise ValueError(f"probe.eps={self.eps} must be > 0")


@dataclass
class ProbeTrainingConfig:
    """How the probes train: epochs, batch, the (lr x wd) grid, schedule, loss options (the ``train.*`` keys)."""

    epochs: int = 1
    batch_size: int = 4
    lrs: list[float] = field(default_factory=lambda: [5e-3, 3e-3, 1e-3, 3e-4, 1e-4])
    wds: list[float] = field(default_factory=lambda: [0.01, 0.1, 0.4, 0.8])
    warmup_fraction: float = 0.0  # of the total steps
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    class_weighting: bool = True  # w_c = N / (K n_c) in the cross-entropy
    regression_loss: Literal["l1", "mse"] = "l1"
    depth_max_mm: float = 100.0  # depth head range (C3VD: 0..100 mm)
    selection_metric: str = "auto"  # "auto": accuracy (phase, clip), mAP (multi-label), mae (skill), dice, rmse
    val_fraction: float = 0.2  # validation carved from training videos when a dataset has none
    eval_batch_size: int = 8  # all P probes at once: activations P x B x N x width (mind GPU memory)
    amp: bool = True  # autocast on CUDA (ignored on CPU)
    # bfloat16 autocast of the probes on CPU too: 1.5-2x faster probe steps on CPUs with native bf16 (AVX512-BF16,
    # AMX), numbers differ from fp32 by bf16 rounding; always bfloat16 on CPU whatever amp_dtype says
    amp_cpu: bool = False
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"  # float16 (SurgMotion) adds a GradScaler
    seed: int = 0
    # "carve": a validation split is carved from training when the dataset has none (ours); "none": train on all
    # training videos and keep no validation (SurgMotion's Cholec80 1-40): only the choice on test exists then
    validation: Literal["carve", "none"] = "carve"
    grid_order: Literal["lr_major", "wd_major"] = "lr_major"  # probe order of the lr x wd grid (SurgMotion: wd-major)
    decay_all: bool = False  # weight decay on every probe parameter, biases and norms too (SurgMotion)
    # "after": update k uses the schedule's factor at step k (the first update the full rate); "before": the
    # scheduler is stepped before each update (SurgMotion), so update k uses the factor of step k + 1
    schedule_step: Literal["after", "before"] = "after"
    lr_batch_scaling: bool = False  # lr x batch_size / 256 (SurgRec / VideoMAE's linear scaling rule)
    # class tasks: soft targets with label smoothing, mixup / cutmix of the training clips (SurgRec; needs
    # features.online=true for mixing; unisurg.evaluation.mixing)
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_switch_prob: float = 0.5  # probability of cutmix rather than mixup when both alphas are on
    # keep every epoch's probes as candidates (epochs x P), so a checkpoint (epoch) is chosen too: SurgRec keeps the
    # best epoch on its validation set, test.csv for 14 of 16 datasets (unisurg.evaluation.snapshots)
    epoch_snapshots: bool = False

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("train.epochs and train.batch_size must be >= 1")
        if not self.lrs or not self.wds:
            raise ValueError("train.lrs and train.wds must be non-empty lists")
        if any(v <= 0 for v in self.lrs) or any(v < 0 for v in self.wds):
            raise ValueError("train.lrs must be > 0 and train.wds >= 0")
        if len(self.betas) != 2:
            raise ValueError("train.betas takes two numbers [beta1, beta2]")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"train.val_fraction={self.val_fraction} must be in [0, 1)")
        if not 0 <= self.label_smoothing < 1 or self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError("train.label_smoothing must be in [0, 1) and train.mixup_alpha / cutmix_alpha >= 0")

    def grid(self) -> list[tuple[float, float]]:
        """The probes' (lr, wd) pairs. lr-major: probe ``i`` = (lrs[i // len(wds)], wds[i % len(wds)]);
        wd-major: probe ``i`` = (lrs[i % len(lrs)], wds[i // len(lrs)]). With ``lr_batch_scaling`` every lr is
        multiplied by ``batch_size / 256``."""
        scale = self.batch_size / 256 if self.lr_batch_scaling else 1.0
        if self.grid_order == "wd_major":
            return [(lr * scale, wd) for wd in self.wds for lr in self.lrs]
        return [(lr * scale, wd) for lr in self.lrs for wd in self.wds]


@dataclass
class FeatureConfig:
    # all patch tokens [N, D] (the paper's protocol); their mean [D]; or "time": the mean of each time
    # step's patch tokens [T', D] (temporal order kept, spatial detail pooled; cheap probes on CPU)
    mode: Literal["tokens", "pooled", "time"] = "tokens"
    dtype: Literal["float16", "float32"] = "float16"  # on-disk dtype of cached features
    cache: bool = True  # write/reuse the frozen features on disk
    online: bool = False  # run the backbone during probe training (needed for augmentation)
    shard_size: int = 256  # clips per shard file
    batch_size: int = 8  # clips per backbone forward
    workers: int = 0  # DataLoader workers decoding clips


@dataclass
class ReportConfig:
    bootstrap_n: int = 1000
    bootstrap_seed: int = 42
    relaxed: Literal["none", "cholec80", "m2cai16"] = "none"  # phase metrics with the relaxed boundary
    # "percentile": point = the statistic of the test set, 95% percentile CI (default_rng draws);
    # "surgmotion": SurgMotion's evals/utils/bootstrap.py: RandomState(seed).choice draws, point = mean of the
    # bootstrap means, "se" = their np.std (the bootstrap standard error), CI = 2.5/97.5 percentiles
    bootstrap: Literal["percentile", "surgmotion"] = "percentile"
    # metric by which the paper-style probe is chosen ON TEST (labelled so); "auto": the task's paper choice
    # (macro-F1 under scikit-learn's label set for phase and clip tasks, as SurgMotion; else the honest key)
    paper_selection_metric: str = "auto"
    figures: bool = True
    max_figures: int = 12  # ribbons / overlays per run


@dataclass
class BenchConfig:
    clip: ClipConfig = field(default_factory=ClipConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    train: ProbeTrainingConfig = field(default_factory=ProbeTrainingConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    # the named protocol the config was resolved from (unisurg.evaluation.protocols); recorded in every run and table
    protocol: str = "unisurg"
    cache_dir: str = "~/.cache/unisurg/bench"
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1", ...
    ingest_workers: int = 1
    # repair faulty annotation entries (implausible, non-finite, duplicate, cut files) instead of failing;
    # every repair is printed and listed in results.json (runs.*.annotation_repairs); `bench --lenient` sets it
    lenient: bool = False

    def validate(self) -> None:
        if (self.train.mixup_alpha > 0 or self.train.cutmix_alpha > 0) and not self.features.online:
            raise ValueError("train.mixup_alpha / cutmix_alpha mix training clips before the frozen backbone: set "
                             "features.online=true (cached features cannot be mixed as pixels)")
        if self.clip.augment != "none" and not self.features.online:
            raise ValueError("clip.augment needs features.online=true: cached features are computed once, "
                             "without augmentation (set features.online=true, or clip.augment=none)")

    def to_dict(self) -> dict:
        return to_dict(self)




def load_bench_config(source: str | dict | None = None, overrides: list[str] | None = None) -> BenchConfig:
    """``BenchConfig`` from a preset name (``paper``, ``tiny``), a YAML file or a dict, plus ``key=value`` overrides."""
    return load_config(BenchConfig, "paper" if source is None else source, overrides or [], yaml_presets("bench"))
