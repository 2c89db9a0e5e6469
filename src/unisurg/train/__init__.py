"""Pretraining: UniSurg, SurgRec-JEPA and SurgRec-MAE on one CPU, one GPU or many (torchrun DDP / FSDP2).

    from unisurg.train import load_pretrain_config, train
    cfg = load_pretrain_config("tiny", ["data.stores=[store]", "run.out=runs/tiny"])
    result = train(cfg)                      # or train(cfg, resume=True)

Modules: ``pretrain_config`` (typed sections, nesting the models' own configs), ``data`` (loader), ``masks`` + ``mask_collator`` (mask generation),
``optim``, ``steps`` (one training step, phase by phase), ``distributed``, ``checkpointing``,
``init_weights``, ``logs``, ``leakage_guard``, ``trainer``, ``command`` (the ``unisurg pretrain`` CLI).
"""

from unisurg.train.logs import read_jsonl
from unisurg.train.pretrain_config import (
    PretrainConfig,
    load_pretrain_config,
    pretrain_presets,
)
from unisurg.train.trainer import Trainer, TrainResult, train

__all__ = ["PretrainConfig", "TrainResult", "Trainer", "load_pretrain_config", "pretrain_presets", "read_jsonl", "train"]
