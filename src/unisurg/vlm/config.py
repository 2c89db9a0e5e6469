"""``VLMConfig``: the typed settings of a VLM study run (``unisurg vlm ... key=value``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from unisurg.typed_config import load_config
from unisurg.vlm.prompts import DEFAULT_PROMPTS


@dataclass
class VLMConfig:
    prompts: list[str] = field(default_factory=lambda: list(DEFAULT_PROMPTS))  # TEMPLATE[@ORDER] names
    # middle: one frame, the clip's middle one (SurgRec); frames: `frames` images spread over the clip;
    # video: the same frames as one video input (families that take video; needs torchvision)
    input: Literal["middle", "frames", "video"] = "middle"
    frames: int = 8  # frames of the frames/video inputs
    split: Literal["train", "val", "test"] = "test"
    split_scheme: str | None = None  # of the dataset adapter; None = its default
    anchor: Literal["online", "offline"] = "offline"  # per-second datasets: the clip is centred on the labelled second
    stride: int = 1  # per-second datasets: every stride-th labelled second of each video
    max_samples: int = 0  # 0 = all; else this many, evenly spaced over the split (before sharding)
    short_side: int = 448  # frame-store short side the images are taken from (the processor resizes further)
    jpeg_quality: int = 90
    cache_dir: str = "~/.cache/unisurg/bench"  # the benchmark's frame-store cache (shared with `unisurg bench`)
    family: str | None = None  # None = from config.json's model_type
    batch_size: int = 8
    max_new_tokens: int = 0  # 0 = the family's (SurgRec: 16, LLaVA-NeXT 32)
    device: str = "auto"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    bootstrap_n: int = 1000
    bootstrap_seed: int = 42
    probe_results: str | None = None  # a `unisurg bench` results.json: its probes' rows beside the VLM's
    surgrec_name: str | None = None  # dataset folder name in the SurgRec-format output (default: the dataset name)

    def validate(self) -> None:
        if not self.prompts:
            raise ValueError("prompts: give at least one prompt name")
        if self.frames < 1 or self.stride < 1 or self.batch_size < 1:
            raise ValueError("frames, stride and batch_size must be >= 1")
        if self.max_samples < 0 or self.max_new_tokens < 0 or self.bootstrap_n < 0:
            raise ValueError("max_samples, max_new_tokens and bootstrap_n must be >= 0")

    def n_frames(self) -> int:
        return 1 if self.input == "middle" else self.frames


def load_vlm_config(overrides: list[str] | None = None, base: dict | None = None) -> VLMConfig:
    """Defaults, then ``base`` (e.g. from command-line options), then dotted ``key=value`` overrides."""
    return load_config(VLMConfig, dict(base or {}), overrides)
