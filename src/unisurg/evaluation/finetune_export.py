"""The exported fine-tuned model: one self-describing folder (``run.out/best`` of ``unisurg finetune``).

* ``model.json``: task, label names, task state, clip protocol, normalisation, input convention, backbone
  (spec, kind, sizes, the pretrained weights' fingerprint), head, validation selection;
* ``weights.safetensors``: every weight, ``backbone.*`` + ``head.*``;
* ``backbone/`` (our ViT only): the fine-tuned encoder in our checkpoint format, so ``unisurg:DIR/backbone``
  loads it wherever a backbone spec is accepted.

:func:`unisurg.evaluation.finetune_predict.load_finetuned` reads it back.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from unisurg.atomic_files import json_value
from unisurg.models.checkpoint import save_checkpoint
from unisurg.models.strict_load import load_strict
from unisurg.models.vit import VideoViT
from unisurg.train.checkpointing import write_dir_atomically

MODEL_FORMAT = "unisurg-finetuned"
MODEL_JSON = "model.json"
WEIGHTS = "weights.safetensors"




def clean_keys(sd: dict) -> dict:
    """Full state dict on CPU, without the activation-checkpoint wrapper's name piece."""
    return {k.replace("._checkpoint_wrapped_module", ""): v.detach().float().cpu().contiguous() for k, v in sd.items()}


def write_export(folder: Path, model_sd: dict, meta: dict, encoder_config=None) -> Path:
    """The self-describing fine-tuned model (atomic directory): ``model.json`` (task, labels, clip protocol,
    normalisation, backbone, head), ``weights.safetensors`` (``backbone.*`` + ``head.*``) and, for our ViT,
    ``backbone/`` in our checkpoint format (so ``unisurg:DIR/backbone`` loads the fine-tuned encoder anywhere)."""
    sd = clean_keys(model_sd)

    def fill(tmp: Path) -> list[Path]:
        save_file(sd, str(tmp / WEIGHTS), metadata={"format": MODEL_FORMAT})
        files = [tmp / WEIGHTS]
        if encoder_config is not None:
            with torch.device("meta"):  # a copy of the config: the training model keeps its own switches
                enc = VideoViT(dataclasses.replace(encoder_config, act_checkpoint=False))
            enc = load_strict(enc, {k.removeprefix("backbone."): v for k, v in sd.items() if k.startswith("backbone.")},
                              source=f"{folder} [backbone]", assign=True)
            save_checkpoint(tmp / "backbone", encoder=enc, extra={"img_size": meta["clip"]["res"],
                                                                    "num_frames": meta["clip"]["frames"],
                                                                    "finetuned_on": meta["dataset"]})
            files += [p for p in (tmp / "backbone").iterdir() if p.is_file()]
        (tmp / MODEL_JSON).write_text(json.dumps(meta, indent=1, default=json_value))
        return files + [tmp / MODEL_JSON]

    return write_dir_atomically(Path(folder), fill)
