"""The typed pretraining configuration: one dataclass per section, checked when loaded.

    from unisurg.train.pretrain_config import load_pretrain_config
    cfg = load_pretrain_config("vitl-stage1", ["data.stores=[/data/store]", "optim.lr=3e-4"])

Sections: ``data`` (frame stores, clip geometry, sampler), ``model`` (an encoder size preset and the
models' own config dataclasses: ``EncoderConfig``, ``PredictorConfig``, ``MAEDecoderConfig``), ``mask``, ``loss`` (objective and the UniSurg terms),
``optim`` (AdamW and its LR / weight-decay schedules), ``ema``, ``schedule`` (epochs, steps,
global batch), ``run`` (output folder, logging, checkpoints, precision, distribution) and
``init`` (weights to start from). An unknown key is an error naming the nearest valid key;
every value is type-checked; ``validate()`` methods check ranges and cross-field rules.
"""

from __future__ import annotations

import dataclasses
import difflib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from unisurg.models.mae_decoder import MAEDecoderConfig
from unisurg.models.predictor import PredictorConfig
from unisurg.models.presets import PRESETS
from unisurg.models.vit import EncoderConfig
from unisurg.objectives.unisurg_loss import UniSurgLossConfig
from unisurg.typed_config import (
    ConfigError,
    check_output_folder,
    load_config,
    to_dict,
    yaml_presets,
)

__all__ = [
    "DataConfig", "ModelConfig", "MaskConfig", "LossConfig", "OptimConfig", "EmaConfig", "ScheduleConfig",
    "RunConfig", "InitConfig", "PretrainConfig", "load_pretrain_config", "ConfigError", "to_dict",
]


def _positive(section: str, **values) -> None:
    for name, v in values.items():
        if v is not None and v < 1:
            raise ValueError(f"{section}.{name} must be >= 1, got {v}")


def _pair(section: str, name: str, pair: list[float]) -> tuple[float, float]:
    # list[float] fields (not tuple[...]): the generic loader coerces lists, and YAML gives lists
    if len(pair) != 2:
        raise ValueError(f"{section}.{name} must be two numbers [low, high], got {list(pair)}")
    return float(pair[0]), float(pair[1])


def _range_pair(section: str, name: str, pair: list[float], lo: float, hi: float) -> None:
    a, b = _pair(section, name, pair)
    if not (lo <= a <= b <= hi):
        raise ValueError(f"{section}.{name}={list(pair)} must satisfy {lo} <= low <= high <= {hi}")


@dataclass
class DataConfig:
    """Frame stores (made by ``unisurg ingest``) and the clips cut from them."""

    stores: list[str] | str = field(default_factory=list)  # one or more store folders
    include_datasets: list[str] | None = None  # keep only these source datasets
    frames: int = 16  # T, stored frames per clip
    stride: int | None = None  # between clip starts (default: frames)
    crop: int = 224
    resize_short: int | None = None  # resize the short side before cropping (None: as stored)
    temporal_jitter: bool = True
    flip: bool = False
    short_video: Literal["pad_last", "stretch", "drop"] = "pad_last"
    # balanced: UniSurg w ∝ 1/(N_d |D_s|); uniform; curated: the per-clip weights of a selection
    # written by `unisurg curate cluster --weights` (SurgRec's cluster-balanced sampling)
    sampler: Literal["balanced", "uniform", "curated"] = "balanced"
    # a curated selection per store (`unisurg curate cluster`): a path, "auto" (STORE/curation/
    # selection.json when present) or null; a subset restricts the clips, weights feed sampler=curated
    selection: list[str | None] | str | None = None
    honour_exclusions: bool = True  # leave out the videos of STORE/curation/exclude.json (curate dedup/leakage)
    workers: int = 4
    prefetch_factor: int = 2
    pin_memory: bool = True  # only takes effect on CUDA
    seed: int | None = None  # clip randomness; None: run.seed

    def validate(self) -> None:
        if isinstance(self.stores, str):
            self.stores = [self.stores]
        _positive("data", frames=self.frames, stride=self.stride, crop=self.crop, resize_short=self.resize_short,
                  prefetch_factor=self.prefetch_factor)
        if self.workers < 0:
            raise ValueError(f"data.workers must be >= 0, got {self.workers}")


# The flat ``model.*`` keys of unisurg 0.1, kept as deprecated aliases of the nested ones.
DEPRECATED_MODEL_KEYS: dict[str, tuple[str, ...]] = {
    "embed_dim": ("encoder.embed_dim",), "depth": ("encoder.depth",), "num_heads": ("encoder.num_heads",),
    "mlp_ratio": ("encoder.mlp_ratio",), "pos_embed": ("encoder.pos_embed",), "rope_variant": ("encoder.rope_variant",),
    "sincos_uniform_power": ("encoder.sincos_uniform_power",), "patch_size": ("encoder.patch_size",),
    "tubelet_size": ("encoder.tubelet_size",), "drop_path": ("encoder.drop_path_rate", "predictor.drop_path_rate"),
    "act_checkpoint": ("encoder.act_checkpoint", "predictor.act_checkpoint", "decoder.act_checkpoint"),
    "predictor_dim": ("predictor.predictor_dim",), "predictor_depth": ("predictor.depth",),
    "predictor_heads": ("predictor.num_heads",), "num_mask_tokens": ("predictor.num_mask_tokens",),
    "decoder_dim": ("decoder.decoder_dim",), "decoder_depth": ("decoder.depth",), "decoder_heads": ("decoder.num_heads",),
}
# Predictor / decoder fields that must equal the encoder's: filled in from it, an error when set otherwise.
SHARED_WITH_ENCODER = ("embed_dim", "pos_embed", "rope_variant", "sincos_uniform_power", "norm_eps")


def _upgrade_flat_model_keys(data: dict) -> dict:
    """Move the deprecated flat keys (``model.embed_dim=...``) to the nested schema."""

    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    if isinstance(data.get("encoder"), str):  # would replace the whole encoder section, so not an alias
        raise ValueError(f"model.encoder is a section now (the encoder's own fields); the size preset is "
                         f"model.preset={data['encoder']}")
    for old, new_keys in DEPRECATED_MODEL_KEYS.items():
        if old not in data:
            continue
        value = data.pop(old)
        warnings.warn(f"model.{old} is deprecated; write {' and '.join('model.' + k for k in new_keys)}",
                      DeprecationWarning, stacklevel=4)
        for key in new_keys:
            section, name = key.split(".")
            data.setdefault(section, {})[name] = value  # the old key was given later than any preset's
    return data


@dataclass
class ModelConfig:
    """The models of a run, each as its own config dataclass (the same ones their checkpoints store).

    ``preset`` names the encoder size (:data:`unisurg.models.presets.PRESETS`); ``encoder`` fields given in
    the YAML or on the command line override it. The predictor and the MAE decoder take the encoder's
    width and position scheme; ``predictor.num_mask_tokens`` defaults to one per mask family.

        model:
          preset: large
          encoder: {pos_embed: rope, drop_path_rate: 0.1}
          predictor: {predictor_dim: 384, depth: 12, num_heads: 12}
    """

    preset: str = "large"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    decoder: MAEDecoderConfig = field(default_factory=MAEDecoderConfig)  # SurgRec-MAE only

    @classmethod
    def resolve_raw(cls, data: dict, root: dict) -> dict:
        """Fill the raw ``model`` mapping before it is built: preset sizes, shared fields, mask tokens."""
        data = _upgrade_flat_model_keys(data)
        preset = data.get("preset", cls.preset)
        if preset not in PRESETS:
            close = difflib.get_close_matches(str(preset), list(PRESETS), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"model.preset '{preset}' is not an encoder preset ({', '.join(PRESETS)}).{hint}")
        encoder = {**PRESETS[preset], "name": preset, **(data.get("encoder") or {})}
        shared = {k: encoder.get(k, getattr(EncoderConfig, k)) for k in SHARED_WITH_ENCODER}
        mask_kind = (root.get("mask") or {}).get("kind", MaskConfig.kind)
        defaults = {"predictor": {"num_mask_tokens": MaskConfig(kind=mask_kind).families},
                    "decoder": {"pos_embed": "sincos"}}
        out = {**data, "preset": preset, "encoder": encoder}
        for part in ("predictor", "decoder"):
            given = dict(data.get(part) or {})
            for k, v in shared.items():
                if k in given and given[k] != v and not (part == "decoder" and k == "pos_embed"):
                    raise ValueError(f"model.{part}.{k}={given[k]!r} differs from model.encoder.{k}={v!r}; "
                                     f"the {part} takes the encoder's")
            out[part] = {**shared, **defaults[part], **given}
        patch = encoder.get("patch_size", EncoderConfig.patch_size)
        out["decoder"]["patch_dim"] = (encoder.get("tubelet_size", EncoderConfig.tubelet_size) * patch * patch
                                       * encoder.get("in_chans", EncoderConfig.in_chans))
        return out

    def validate(self) -> None:
        _positive("model.encoder", patch_size=self.encoder.patch_size, tubelet_size=self.encoder.tubelet_size)
        for name, c in (("encoder", self.encoder), ("predictor", self.predictor), ("decoder", self.decoder)):
            if not 0.0 <= getattr(c, "drop_path_rate", 0.0) < 1.0:
                raise ValueError(f"model.{name}.drop_path_rate must be in [0, 1), got {c.drop_path_rate}")
        for name, width, heads in (("predictor", self.predictor.predictor_dim, self.predictor.num_heads),
                                   ("decoder", self.decoder.decoder_dim, self.decoder.num_heads)):
            _positive(f"model.{name}", width=width, num_heads=heads)
            if width % heads:
                raise ValueError(f"model.{name} width {width} is not divisible by its num_heads={heads}")


@dataclass
class MaskConfig:
    """Masks: random tubes (UniSurg), V-JEPA multiblock, or V-JEPA 2's two multiblock families."""

    kind: Literal["tube", "multiblock", "vjepa2"] = "tube"
    ratio: list[float] = field(default_factory=lambda: [0.75, 0.95])  # tube: rho ~ U(ratio) per sample
    num_blocks: int = 8  # multiblock
    spatial_scale: list[float] = field(default_factory=lambda: [0.15, 0.15])
    aspect_ratio: list[float] = field(default_factory=lambda: [0.75, 1.5])
    temporal_scale: list[float] = field(default_factory=lambda: [1.0, 1.0])

    def validate(self) -> None:
        _range_pair("mask", "ratio", self.ratio, 0.0, 1.0)
        _range_pair("mask", "spatial_scale", self.spatial_scale, 0.0, 1.0)
        _range_pair("mask", "temporal_scale", self.temporal_scale, 0.0, 1.0)
        _pair("mask", "aspect_ratio", self.aspect_ratio)
        if not 0 < self.aspect_ratio[0] <= self.aspect_ratio[1]:
            raise ValueError(f"mask.aspect_ratio={list(self.aspect_ratio)} must satisfy 0 < low <= high")
        _positive("mask", num_blocks=self.num_blocks)

    @property
    def families(self) -> int:
        return 2 if self.kind == "vjepa2" else 1


@dataclass
class LossConfig(UniSurgLossConfig):
    """The objective and, for ``unisurg``, the switches of its terms (paper section 3.4; defaults = paper).

    objective: ``unisurg`` (L_motion + λ_st L_st + λ_var L_var), ``vjepa`` (plain L1 of V-JEPA:
    SurgRec-JEPA; every UniSurg term is off whatever the fields below say) or ``mae``
    (SurgRec-MAE pixel reconstruction; ``norm_pix``: per-patch normalised targets).
    """

    objective: Literal["unisurg", "vjepa", "mae"] = "unisurg"
    norm_pix: bool = True

    def unisurg(self) -> UniSurgLossConfig:
        """The :class:`UniSurgLossConfig` the JEPA objectives run with."""
        if self.objective == "vjepa":
            return UniSurgLossConfig.plain_vjepa()
        names = [f.name for f in dataclasses.fields(UniSurgLossConfig)]
        return UniSurgLossConfig(**{n: getattr(self, n) for n in names})


@dataclass
class OptimConfig:
    """AdamW with a warmup + cosine LR and an optional cosine weight-decay schedule (V-JEPA recipe)."""

    lr: float = 5e-4  # peak (paper)
    start_lr: float = 1e-4  # at step 0, linear warmup to lr
    final_lr: float = 1e-6
    lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"  # after warmup
    warmup_epochs: float = 0.0
    warmup_steps: int | None = None  # overrides warmup_epochs
    weight_decay: float = 0.04
    final_weight_decay: float | None = None  # None: constant; else cosine from weight_decay to this
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    grad_clip: float = 0.0  # max global grad norm; 0: off

    def validate(self) -> None:
        for name in ("lr", "start_lr", "final_lr", "weight_decay", "warmup_epochs", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"optim.{name} must be >= 0, got {getattr(self, name)}")
        if self.final_weight_decay is not None and self.final_weight_decay < 0:
            raise ValueError(f"optim.final_weight_decay must be >= 0, got {self.final_weight_decay}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ValueError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        _pair("optim", "betas", self.betas)
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"optim.betas={list(self.betas)} must lie in [0, 1)")
        if self.eps <= 0:
            raise ValueError(f"optim.eps must be > 0, got {self.eps}")


@dataclass
class EmaConfig:
    """EMA target: momentum 0.99925 constant (paper), or a linear / cosine ramp to ``final_momentum``."""

    momentum: float = 0.99925
    final_momentum: float = 1.0
    schedule: Literal["constant", "linear", "cosine"] = "constant"

    def validate(self) -> None:
        for name in ("momentum", "final_momentum"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"ema.{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass
class ScheduleConfig:
    """Length of training. ``iterations_per_epoch`` None: one pass over the clips (derived from the data)."""

    epochs: int = 1
    iterations_per_epoch: int | None = None
    global_batch_size: int = 256  # = per-rank batch x world size
    max_steps: int | None = None  # stop early (the LR schedule still spans every epoch)

    def validate(self) -> None:
        _positive("schedule", epochs=self.epochs, iterations_per_epoch=self.iterations_per_epoch,
                  global_batch_size=self.global_batch_size, max_steps=self.max_steps)


@dataclass
class RunConfig:
    """Where and how the run executes: output, logging, checkpoints, precision, distribution."""

    out: str = "runs/pretrain"
    seed: int = 0
    log_every: int = 10  # steps between JSONL / TensorBoard records (each a host sync)
    checkpoint_every: int = 1000  # steps between checkpoints (0: only at the end)
    keep_last: int = 3  # checkpoints kept
    tensorboard: bool = True  # skipped with a note if the tensorboard package is missing
    progress: bool = True  # tqdm bar on stderr
    dtype: Literal["bf16", "fp32"] = "bf16"  # bf16 autocast on CUDA; CPU always runs fp32
    compile: bool = False  # torch.compile the encoder, predictor / decoder
    strategy: Literal["ddp", "fsdp"] = "ddp"  # multi-process data parallel: DDP or FSDP2 (fully_shard)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = None  # torch.set_num_threads (CPU)
    export: bool = True  # write the final model in our checkpoint format to <out>/final
    # train although `unisurg curate leakage` found benchmark test videos in the corpus (recorded in the log)
    allow_leakage: bool = False

    def validate(self) -> None:
        _positive("run", log_every=self.log_every, keep_last=self.keep_last, threads=self.threads)
        if self.checkpoint_every < 0:
            raise ValueError(f"run.checkpoint_every must be >= 0 (0: only at the end), got {self.checkpoint_every}")
        if not str(self.out).strip():
            raise ValueError("run.out must name an output folder")
        check_output_folder(self.out, "run.out")


@dataclass
class InitConfig:
    """Weights to start from: a checkpoint of ours (e.g. the stage-1 run) or an official V-JEPA 2 file.

    Every component loaded must fit the configured architecture exactly (a shape that cannot
    carry over is an error naming the key); positions (RoPE / sin-cos) are computed for any T,
    so a T = 16 model continues at T = 64.
    """

    checkpoint: str | None = None
    encoder_from: Literal["encoder", "target_encoder"] = "encoder"  # weights of the online encoder
    load_target: bool = True  # target <- checkpoint's target_encoder (else a copy of the encoder)
    load_predictor: bool = True
    load_decoder: bool = True  # MAE decoder, from our run checkpoints

    def validate(self) -> None:
        if self.checkpoint is not None and not str(self.checkpoint).strip():
            raise ValueError("init.checkpoint is empty; remove it or name a checkpoint")


@dataclass
class PretrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    run: RunConfig = field(default_factory=RunConfig)
    init: InitConfig = field(default_factory=InitConfig)

    def validate(self) -> None:
        enc = self.model.encoder
        if self.data.crop % enc.patch_size:
            raise ValueError(f"data.crop={self.data.crop} is not divisible by model.encoder.patch_size={enc.patch_size}")
        if self.data.frames % enc.tubelet_size:
            raise ValueError(f"data.frames={self.data.frames} is not divisible by model.encoder.tubelet_size="
                             f"{enc.tubelet_size}")
        if self.model.predictor.num_mask_tokens < self.mask.families:
            raise ValueError(f"model.predictor.num_mask_tokens={self.model.predictor.num_mask_tokens} < "
                             f"{self.mask.families} mask families of mask.kind={self.mask.kind}")
        if self.loss.objective == "mae" and self.mask.kind == "vjepa2":
            raise ValueError("loss.objective=mae takes one mask family; use mask.kind=tube (VideoMAE) or multiblock")
        if self.data.resize_short is not None and self.data.crop > self.data.resize_short:
            raise ValueError(f"data.crop={self.data.crop} exceeds data.resize_short={self.data.resize_short}")

    @property
    def out(self) -> Path:
        return Path(self.run.out)


def load_pretrain_config(source: str | Path | dict | None = None, overrides: list[str] | None = None) -> PretrainConfig:
    """A validated :class:`PretrainConfig` from a preset name, a YAML file (may say ``base: PRESET``) or a dict,
    then dotted ``key=value`` overrides."""

    return load_config(PretrainConfig, source, overrides, presets=pretrain_presets())


def pretrain_presets() -> dict[str, dict]:
    """The shipped pretraining presets (``unisurg/configs/pretrain/*.yaml``), resolved."""
    return yaml_presets("pretrain")
