"""Typed configs: unknown keys, types, presets, dotted overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from unisurg.typed_config import ConfigError, load_config, to_dict


@dataclass
class Optim:
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    kind: Literal["adamw", "sgd"] = "adamw"

    def validate(self):
        if self.lr <= 0:
            raise ValueError("optim.lr must be positive")


@dataclass
class Cfg:
    name: str = "x"
    steps: int = 10
    optim: Optim = field(default_factory=Optim)
    tags: list[str] = field(default_factory=list)
    out: str | None = None


PRESETS = {"tiny": {"steps": 2, "optim": {"lr": 1e-3}}}


def test_preset_and_overrides():
    cfg = load_config(Cfg, "tiny", ["optim.lr=1e-3", "optim.betas=[0.8, 0.95]", "tags=[a, b]", "out=null"], PRESETS)
    assert cfg.steps == 2 and cfg.optim.lr == 0.001 and cfg.optim.betas == (0.8, 0.95)
    assert cfg.tags == ["a", "b"] and cfg.out is None
    assert to_dict(cfg)["optim"]["betas"] == [0.8, 0.95]


def test_unknown_key_names_path_and_suggests():
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.lrr'.*Did you mean 'lr'"):
        load_config(Cfg, None, ["optim.lrr=1"], PRESETS)


@pytest.mark.parametrize("item,msg", [("steps=1.5", "steps: expected an integer"),
                                      ("optim.kind=adam", r"not one of \['adamw', 'sgd'\]"),
                                      ("optim.lr=-1", "optim.lr must be positive"),
                                      ("optim.betas=[1]", "expected 2 values"),
                                      ("noequals", "key.path=value")])
def test_bad_values(item, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config(Cfg, None, [item], PRESETS)


def test_yaml_file_with_base(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("base: tiny\noptim:\n  kind: sgd\n")
    cfg = load_config(Cfg, f, [], PRESETS)
    assert (cfg.steps, cfg.optim.lr, cfg.optim.kind) == (2, 1e-3, "sgd")
    with pytest.raises(ConfigError, match="neither a preset"):
        load_config(Cfg, tmp_path / "missing.yaml", [], PRESETS)
