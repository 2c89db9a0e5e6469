"""SurgVLP (Yuan et al. 2023, "Learning Multi-modal Representations by Watching Hundreds of Surgical Video
Lectures"): a ResNet-50 image tower and a BERT text tower in one joint embedding space.

Module names follow the authors' ``SurgVLP`` (CAMMA-public/SurgVLP, ``surgvlp/codes/models``) so their checkpoint
loads key for key:

* ``backbone_img.model``: torchvision ResNet-50 without its classifier (our :class:`ResNetTrunk`);
  ``backbone_img.global_embedder``: ``Linear(2048, 768)`` on the globally average-pooled last stage.
  Image embedding = ``global_embedder(mean over the 7 x 7 map)`` (config ``img_norm=False``: not normalised).
* ``backbone_text.model``: ``transformers.BertModel`` (Bio_ClinicalBERT in the release).
  Sentence embedding (config ``text_last_n_layers=4``, ``text_aggregate_method="sum"``, ``text_agg_tokens=True``):
  the authors merge word pieces into words (summing pieces), cut after the first ``[SEP]``, pad with zero vectors to
  the token length ``L`` and average over the ``L`` positions, per layer, then sum the last 4 layers. Summing the
  pieces of a word and then the words is summing the tokens, so this equals
  ``sum_{layers -4..-1} sum_{tokens up to [SEP]} h / L``; :func:`sentence_embedding` computes that directly.

Zero-shot classification (the authors' ``tests/zero_shot.py``): cosine similarity of the L2-normalised image and
prompt embeddings, ``softmax(100 * cos)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unisurg.models.resnet import ResNetTrunk

TEXT_LAYERS = 4  # text_last_n_layers of the released config
MAX_TOKENS = 77  # surgvlp.tokenize: padding="max_length", max_length=77, truncation=True
LOGIT_SCALE = 100.0  # tests/zero_shot.py: (100.0 * image_features @ text_features.T).softmax(dim=-1)


class SurgVLPImageTower(nn.Module):
    """``backbone_img``: ResNet trunk (``model``) + ``global_embedder`` on the average-pooled last stage."""

    def __init__(self, trunk: ResNetTrunk, embed_dim: int):
        super().__init__()
        self.model = trunk
        self.global_embedder = nn.Linear(trunk.embed_dim, embed_dim)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Last-stage feature map ``[N, Hp * Wp, 2048]`` in raster order (stride 32)."""
        return self.model(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` (ImageNet-normalised RGB) -> image embeddings ``[N, D]`` (not normalised)."""
        pooled = self.model(images).mean(dim=1)  # = AdaptiveAvgPool2d(1) of the feature map
        return self.global_embedder(pooled.to(self.global_embedder.weight.dtype))


def sentence_embedding(hidden_states: tuple[torch.Tensor, ...], input_ids: torch.Tensor, sep_id: int,
                       last_n: int = TEXT_LAYERS) -> torch.Tensor:
    """The authors' sentence embedding (see the module docstring): ``[B, D]`` from BERT's hidden states.

    ``hidden_states``: embeddings + every layer, each ``[B, L, D]``; tokens after the first ``[SEP]`` (padding)
    do not count, the sum is divided by the padded length ``L``.
    """
    is_sep = input_ids == sep_id
    if not bool(is_sep.any(dim=1).all()):
        raise ValueError(f"every token sequence must contain [SEP] (id {sep_id}); tokenize with the model's tokenizer")
    first_sep = is_sep.int().argmax(dim=1, keepdim=True)
    keep = (torch.arange(input_ids.shape[1], device=input_ids.device)[None] <= first_sep).to(hidden_states[-1].dtype)
    layers = torch.stack(hidden_states[-last_n:]).sum(dim=0)  # [B, L, D]
    return (layers * keep[..., None]).sum(dim=1) / input_ids.shape[1]


class SurgVLPTextTower(nn.Module):
    """``backbone_text``: ``model`` = a ``transformers.BertModel``; forward -> sentence embeddings ``[B, D]``."""

    def __init__(self, bert: nn.Module, sep_id: int, last_n: int = TEXT_LAYERS):
        super().__init__()
        self.model = bert
        self.sep_id = int(sep_id)
        self.last_n = int(last_n)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                         output_hidden_states=True)
        return sentence_embedding(out.hidden_states, input_ids, self.sep_id, self.last_n)


class SurgVLP(nn.Module):
    """Both towers; ``tokenizer`` (a transformers tokenizer, not a module) turns prompts into token ids."""

    def __init__(self, image: SurgVLPImageTower, text: SurgVLPTextTower, tokenizer=None):
        super().__init__()
        self.backbone_img = image
        self.backbone_text = text
        self.tokenizer = tokenizer

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone_img(images)

    def tokenize(self, prompts: list[str], device=None) -> dict[str, torch.Tensor]:
        """``surgvlp.tokenize``: pad to 77 tokens, truncate longer prompts."""
        if self.tokenizer is None:
            raise ValueError("SurgVLP: no tokenizer was given (spec option ?tokenizer=DIR, a local copy of "
                             "emilyalsentzer/Bio_ClinicalBERT's tokenizer files)")
        enc = self.tokenizer(list(prompts), padding="max_length", max_length=MAX_TOKENS, truncation=True,
                             return_tensors="pt")
        return {k: enc[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")}

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        device = self.backbone_img.global_embedder.weight.device
        return self.backbone_text(**self.tokenize(prompts, device))


def zero_shot_logits(image_emb: torch.Tensor, text_emb: torch.Tensor, scale: float = LOGIT_SCALE) -> torch.Tensor:
    """``scale * cos(image, prompt)`` ``[N, K]`` (CLIP-style zero-shot, Radford et al. 2021 Sec. 3.1.2)."""
    return scale * F.normalize(image_emb.float(), dim=-1) @ F.normalize(text_emb.float(), dim=-1).T
