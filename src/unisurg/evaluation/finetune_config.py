"""``FinetuneConfig``: the typed configuration of ``unisurg finetune`` (whole encoder + task head).

It shares the benchmark's sections where the meaning is the same (``clip``: the clip protocol and the
training augmentation; ``report``: bootstrap and figures) and the pretraining's optimiser and EMA
sections (``optim``: AdamW, warm-up + cosine, gradient clipping; ``ema``: the momentum of the
optional weight EMA), so the tasks, the sample builders and the schedules are the same code.

Presets (``load_finetune_config(NAME, ["key=value", ...])``):

* ``videomae``: the VideoMAE fine-tuning recipe that SurgRec's benchmark scripts carry (docs: SPEC.md
  section 9): 16 frames of 224 px at 4 fps, a linear head on a LayerNorm of the mean-pooled tokens,
  AdamW lr 5e-4 x batch / 256 (batch 64 here: 1.25e-4), weight decay 0.05, 50 epochs with 5 of
  warm-up from 1e-6, cosine to 1e-6, layer decay 0.75, drop path 0.1, RandAugment m7-n4-mstd0.5-inc1
  + random-resized crop + random erasing 0.25, mixup 0.8, cutmix 1.0, label smoothing 0.1; test on
  5 temporal segments x 3 spatial crops, softmax averaged.
* ``vjepa2``: a V-JEPA 2-style recipe: V-JEPA 2's attentive head (4 blocks, 16 heads) on all tokens of
  the benchmark's 64-frame 256 px clips, random-resized crop, label smoothing 0.1, no mixup, layer decay
  0.75, drop path 0.1, an EMA of the weights; its numbers are ours (V-JEPA 2 publishes frozen probes).
* ``tiny``: CPU-sized, for tests and the demo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from unisurg.evaluation.bench_config import ClipConfig, ReportConfig
from unisurg.train.pretrain_config import EmaConfig, OptimConfig
from unisurg.typed_config import load_config, to_dict, yaml_presets

FINETUNE_TASKS = ("phase", "triplet", "clip", "skill")


@dataclass
class FinetuneModelConfig:
    """The trainable model: which head, and the regularisers of the encoder."""

    head: Literal["linear", "attentive"] = "linear"  # linear: LayerNorm(mean of tokens) -> Linear
    head_depth: int = 4  # attentive: depth-1 self-attention blocks + 1 cross-attention block (V-JEPA 2)
    head_heads: int = 16
    head_init_scale: float = 0.001  # linear head weights x this at init (VideoMAE's init_scale)
    head_dropout: float = 0.0  # dropout before the linear layer
    drop_path: float = 0.1  # stochastic depth of the encoder blocks (linear ramp 0 -> drop_path), where it has any
    layer_decay: float = 0.75  # layer-wise LR decay; 1.0 = off
    act_checkpoint: bool = True  # activation checkpointing of the encoder blocks (applies on CUDA only)

    def validate(self) -> None:
        if not 0 <= self.drop_path < 1:
            raise ValueError(f"model.drop_path={self.drop_path} must be in [0, 1)")
        if not 0 < self.layer_decay <= 1:
            raise ValueError(f"model.layer_decay={self.layer_decay} must be in (0, 1] (1 = no decay)")
        if self.head_depth < 1 or self.head_heads < 1:
            raise ValueError("model.head_depth and model.head_heads must be >= 1")
        if not 0 <= self.head_dropout < 1:
            raise ValueError(f"model.head_dropout={self.head_dropout} must be in [0, 1)")


@dataclass
class FinetuneTrainConfig:
    """Length, batch, loss and selection (the ``train.*`` keys; the task code reads the shared names)."""

    epochs: int = 50
    batch_size: int = 64  # global: per-process batch = batch_size / processes
    eval_batch_size: int = 16  # clips per forward at evaluation (each with all its test views)
    label_smoothing: float = 0.1  # classification (phase, clip)
    mixup: float = 0.8  # Beta(alpha, alpha) of mixup; 0 = off (classification and multi-label)
    cutmix: float = 1.0  # Beta(alpha, alpha) of cutmix; 0 = off
    mixup_prob: float = 1.0  # probability that a batch is mixed at all
    mixup_switch_prob: float = 0.5  # with both on: probability of cutmix instead of mixup
    use_ema: bool = False  # keep an EMA of the weights (momentum: ema.momentum); validation and test use it
    class_weighting: bool = False  # w_c = N / (K n_c) in the cross-entropy (the probe benchmark's option)
    regression_loss: Literal["l1", "mse"] = "l1"
    depth_max_mm: float = 100.0  # unused by the fine-tuned tasks; the task code reads it
    selection_metric: str = "auto"  # validation metric of the best checkpoint; auto = the task's
    val_fraction: float = 0.2  # validation carved from training videos when a dataset has none
    validation: Literal["carve", "none"] = "carve"  # none: every training video trains (no validation split)
    eval_every: int = 1  # epochs between validations (the last epoch always validates)
    seed: int = 0

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1 or self.eval_every < 1:
            raise ValueError("train.epochs, train.batch_size, train.eval_batch_size and train.eval_every must be >= 1")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"train.label_smoothing={self.label_smoothing} must be in [0, 1)")
        if self.mixup < 0 or self.cutmix < 0:
            raise ValueError("train.mixup and train.cutmix are Beta parameters: >= 0 (0 = off)")
        for k in ("mixup_prob", "mixup_switch_prob"):
            if not 0 <= getattr(self, k) <= 1:
                raise ValueError(f"train.{k}={getattr(self, k)} must be a probability in [0, 1]")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"train.val_fraction={self.val_fraction} must be in [0, 1)")


@dataclass
class TestViewsConfig:
    """Multi-view testing: each test sample seen as ``temporal x spatial`` views, outputs averaged."""

    temporal: int = 5  # clip-level tasks: frame grids shifted across the clip; per-second tasks: always 1
    spatial: int = 3  # crops along the long side of the stored frames (1 = the centre crop)

    def validate(self) -> None:
        if self.temporal < 1 or self.spatial < 1:
            raise ValueError("test.temporal and test.spatial must be >= 1")


@dataclass
class FinetuneRunConfig:
    """Where and how the run executes (output, checkpoints, precision, distribution)."""

    out: str = "finetune-out"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    strategy: Literal["ddp", "fsdp"] = "ddp"  # under torchrun
    dtype: Literal["bf16", "fp32"] = "bf16"  # bf16 autocast on CUDA; CPU computes in fp32
    checkpoint_every: int = 0  # steps between mid-epoch checkpoints (0: at the end of every epoch only)
    keep_last: int = 2
    workers: int = 0  # DataLoader workers decoding and augmenting clips
    threads: int | None = None
    progress: bool = True
    log_every: int = 1

    def validate(self) -> None:
        if self.checkpoint_every < 0 or self.keep_last < 1 or self.workers < 0 or self.log_every < 1:
            raise ValueError("run.checkpoint_every >= 0, run.keep_last >= 1, run.workers >= 0, run.log_every >= 1")


@dataclass
class FinetuneConfig:
    clip: ClipConfig = field(default_factory=ClipConfig)
    model: FinetuneModelConfig = field(default_factory=FinetuneModelConfig)
    train: FinetuneTrainConfig = field(default_factory=FinetuneTrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    test: TestViewsConfig = field(default_factory=TestViewsConfig)
    run: FinetuneRunConfig = field(default_factory=FinetuneRunConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    cache_dir: str = "~/.cache/unisurg/bench"
    ingest_workers: int = 1
    lenient: bool = False  # repair faulty annotation entries (and record each) instead of failing

    def to_dict(self) -> dict:
        return to_dict(self)


def load_finetune_config(source: str | dict | None = None, overrides: list[str] | None = None) -> FinetuneConfig:
    """``FinetuneConfig`` from a preset (``videomae``, ``vjepa2``, ``tiny``), a YAML file or a dict, plus overrides."""
    return load_config(FinetuneConfig, "videomae" if source is None else source, overrides or [],
                       yaml_presets("finetune"))
