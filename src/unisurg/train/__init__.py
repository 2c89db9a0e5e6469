"""Pretraining: UniSurg, SurgRec-JEPA and SurgRec-MAE on one CPU, one GPU or many (torchrun DDP / FSDP2).

    from unisurg.train import load_pretrain_config, train
    cfg = load_pretrain_config("tiny", ["data.stores=[store]", "run.out=runs/tiny"])
    result = train(cfg)                      # or train(cfg, resume=True)

Modules: ``config`` (typed sections), ``presets`` (YAML presets in ``unisurg/configs``), ``data``,
``masking``, ``optim``, ``steps``, ``distributed``, ``checkpointing``, ``init_weights``, ``logs``,
``trainer``, ``command`` (the ``unisurg pretrain`` CLI). Attributes load lazily so that the CLI
parser does not import torch.
"""

_EXPORTS = {
    "PretrainConfig": "unisurg.train.config",
    "load_pretrain_config": "unisurg.train.config",
    "pretrain_presets": "unisurg.train.presets",
    "train": "unisurg.train.trainer",
    "Trainer": "unisurg.train.trainer",
    "TrainResult": "unisurg.train.trainer",
    "read_jsonl": "unisurg.train.logs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'unisurg.train' has no attribute {name!r}")
