"""``surgvlp:FILE[?tokenizer=DIR&text_heads=N]``: the SurgVLP release (CAMMA-public/SurgVLP) loaded strictly into
:class:`unisurg.models.surgvlp.SurgVLP`.

The released file (``SurgVLP.pth``, read by the authors with ``model.load_state_dict(torch.load(path))``) is the
raw state dict of their ``SurgVLP`` module: ``backbone_img.model.*`` (torchvision ResNet-50, no ``fc``),
``backbone_img.global_embedder.{weight,bias}`` (2048 -> 768) and ``backbone_text.model.*`` (Bio_ClinicalBERT's
``BertModel``, including ``embeddings.position_ids``, a buffer transformers 4.30 saved and newer versions do not
have: it must be ``0..P-1`` and is dropped). A ``module.`` prefix or a ``state_dict`` / ``model`` wrapper is
accepted. The BERT configuration is read from the tensor shapes (vocabulary, width, depth, MLP width, positions,
token types; heads = width / 64 unless ``?text_heads=``; GELU, LayerNorm eps 1e-12: BERT's); every key must fit.

The tokenizer is not in the file: ``?tokenizer=DIR`` names a local copy of ``emilyalsentzer/Bio_ClinicalBERT``'s
tokenizer files (``vocab.txt``, ``tokenizer_config.json``); only zero-shot classification needs it.

Input convention (``surgvlp._transform``): RGB, ``Resize((360, 640))`` then ``CenterCrop(224)``, ImageNet mean/std,
one frame at a time. As a probing backbone the tokens are the ResNet's last-stage map, ``[B, T * 7 * 7, 2048]``
in (t, h, w) order; zero-shot uses the 768-d image embedding (``unisurg bench --protocol zero-shot``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import nn

from unisurg.backbones.image import (
    DEFAULT_CHUNK,
    image_backbone,
    read_weights,
    select_state_dict,
)
from unisurg.backbones.spec import (
    Backbone,
    BackboneSpecError,
    SpecOptions,
    fingerprint_path,
)
from unisurg.models.resnet import ResNetTrunk, resnet_config
from unisurg.models.strict_load import CheckpointError, load_strict
from unisurg.models.surgvlp import SurgVLP, SurgVLPImageTower, SurgVLPTextTower

log = logging.getLogger(__name__)

ANCHOR = "backbone_img.global_embedder.weight"
IMG, TXT = "backbone_img.model.", "backbone_text.model."
POSITION_IDS = TXT + "embeddings.position_ids"
BERT_SEP_ID = 102  # [SEP] in the BERT-base-cased vocabulary Bio_ClinicalBERT uses
BERT_HEAD_WIDTH = 64


def _need(sd: dict, key: str, source: str) -> torch.Tensor:
    if key not in sd:
        raise CheckpointError(f"{source}: missing key {key!r} (not a SurgVLP checkpoint?)")
    return sd[key]


def bert_config(sd: dict[str, torch.Tensor], *, source: str, num_heads: int | None = None):
    """``transformers.BertConfig`` of the text tower from the shapes of ``backbone_text.model.*``."""
    from transformers import BertConfig

    vocab, width = _need(sd, TXT + "embeddings.word_embeddings.weight", source).shape
    ids = {int(m.group(1)) for k in sd if (m := re.match(re.escape(TXT) + r"encoder\.layer\.(\d+)\.", k))}
    if not ids or ids != set(range(max(ids) + 1)):
        raise CheckpointError(f"{source}: BERT layer indices must be 0..N-1, found {sorted(ids)[:10]}")
    if num_heads is None:
        if width % BERT_HEAD_WIDTH:
            raise CheckpointError(f"{source}: cannot infer the heads of BERT width {width}; pass ?text_heads=")
        num_heads = width // BERT_HEAD_WIDTH
    if width % num_heads:
        raise CheckpointError(f"{source}: BERT width {width} does not split into {num_heads} heads")
    return BertConfig(
        vocab_size=vocab, hidden_size=width, num_hidden_layers=max(ids) + 1, num_attention_heads=num_heads,
        intermediate_size=_need(sd, TXT + "encoder.layer.0.intermediate.dense.weight", source).shape[0],
        max_position_embeddings=_need(sd, TXT + "embeddings.position_embeddings.weight", source).shape[0],
        type_vocab_size=_need(sd, TXT + "embeddings.token_type_embeddings.weight", source).shape[0],
        hidden_act="gelu", layer_norm_eps=1e-12,
    )


def _drop_position_ids(sd: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    ids = sd.get(POSITION_IDS)
    if ids is None:
        return sd
    if not torch.equal(ids.reshape(-1).long(), torch.arange(ids.numel())):
        raise CheckpointError(f"{source}: {POSITION_IDS!r} is not 0..{ids.numel() - 1}; this BERT is not supported")
    return {k: v for k, v in sd.items() if k != POSITION_IDS}


def build_surgvlp(sd: dict[str, torch.Tensor], *, source: str, tokenizer=None,
                  text_heads: int | None = None) -> SurgVLP:
    """Strictly load a SurgVLP state dict (keys ``backbone_img.*`` / ``backbone_text.*``) into :class:`SurgVLP`."""
    from transformers import BertModel

    sd = dict(_drop_position_ids(sd, source))
    img_sd = {k[len(IMG):]: v for k, v in sd.items() if k.startswith(IMG)}
    trunk_cfg = resnet_config(img_sd, source=source)
    emb_w = _need(sd, ANCHOR, source)
    cfg = bert_config(sd, source=source, num_heads=text_heads)
    bert = BertModel(cfg, add_pooling_layer=TXT + "pooler.dense.weight" in sd)
    with torch.device("meta"):
        trunk = ResNetTrunk(trunk_cfg)
        image = SurgVLPImageTower(trunk, emb_w.shape[0])
    sep = tokenizer.sep_token_id if tokenizer is not None else BERT_SEP_ID
    model = SurgVLP(image, SurgVLPTextTower(bert, sep), tokenizer)
    for k in model.state_dict():  # absent from old files, unused in eval mode
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = torch.zeros((), dtype=torch.long)
    load_strict(model, sd, source=source, assign=True)
    return model.eval()


def load_tokenizer(folder: str | Path, spec: str):
    """A local Hugging Face tokenizer folder (never downloaded)."""
    from transformers import AutoTokenizer

    path = Path(folder)
    if not path.is_dir():
        raise BackboneSpecError(f"backbone spec {spec!r}: tokenizer folder not found: {path} (a local copy of "
                                "emilyalsentzer/Bio_ClinicalBERT's vocab.txt + tokenizer_config.json)")
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


class SurgVLPImageTokens(nn.Module):
    """Frame model for probing: the image tower's last-stage map ``[N, Hp * Wp, 2048]``; keeps the whole
    :class:`SurgVLP` as ``vlp`` so zero-shot classification can reach the text tower."""

    def __init__(self, vlp: SurgVLP):
        super().__init__()
        self.vlp = vlp

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.vlp.backbone_img.tokens(images)


def load_surgvlp(arg: str, opts: SpecOptions, *, spec: str, device=None, dtype=None) -> Backbone:
    """``surgvlp:FILE[?tokenizer=DIR&text_heads=N&key=&prefix=&chunk=]``."""
    path = Path(arg)
    if not path.is_file():
        raise FileNotFoundError(f"backbone spec {spec!r}: weights file not found: {path}")
    tok_dir = opts.take("tokenizer")
    text_heads = opts.take("text_heads", cast=int)
    chunk = opts.take("chunk", DEFAULT_CHUNK, cast=int)
    sd, notes = select_state_dict(read_weights(path), ANCHOR, source=str(path), key=opts.take("key"),
                                  prefix=opts.take("prefix"))
    outside = [k for k in sd if not k.startswith(("backbone_img.", "backbone_text."))]
    if outside:
        raise CheckpointError(f"{path}: unexpected key(s) outside backbone_img / backbone_text: "
                              f"{', '.join(outside[:10])}")
    tokenizer = load_tokenizer(tok_dir, spec) if tok_dir is not None else None
    vlp = build_surgvlp(sd, source=str(path), tokenizer=tokenizer, text_heads=text_heads)
    for note in notes:
        log.info("%s: %s", path, note)
    trunk = vlp.backbone_img.model
    return image_backbone(
        SurgVLPImageTokens(vlp), name=f"SurgVLP ResNet-{3 * sum(trunk.config.depths) + 2} ({path.stem})", spec=spec,
        embed_dim=trunk.embed_dim, img_size=224, patch_size=32, fingerprint=fingerprint_path(path), chunk=chunk,
        in_chans=trunk.config.in_chans,
    )
