"""SurgVLP loaded from its official checkpoint layout reproduces the official model code (both towers), and its
sentence embedding equals the authors' word-piece aggregation.

Expected outputs: CAMMA-public/SurgVLP on a tiny random configuration (tests/fixtures/baselines/surgvlp/README.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("transformers")

from unisurg.backbones.registry import detect_kind, load_backbone
from unisurg.backbones.surgvlp import build_surgvlp  # noqa: E402
from unisurg.models.strict_load import CheckpointError  # noqa: E402
from unisurg.models.surgvlp import sentence_embedding, zero_shot_logits  # noqa: E402

FIX = Path(__file__).resolve().parent / "fixtures" / "baselines" / "surgvlp"
SPEC = f"surgvlp:{FIX / 'surgvlp_tiny.pth'}?tokenizer={FIX / 'tokenizer'}&text_heads=2"
TOL = 1e-4


@pytest.fixture(scope="module")
def loaded():
    return load_backbone(SPEC), load_file(str(FIX / "expected.safetensors"))


def test_image_tower_matches_official_code(loaded):
    bb, e = loaded
    vlp = bb.model.image_model.vlp
    with torch.no_grad():
        emb = vlp.encode_image(e["images"])
        tokens = bb.model(e["images"][:, :, None])  # a clip of one frame -> the last-stage map
    assert (emb - e["img_emb"]).abs().max().item() <= TOL
    assert (bb.kind, bb.embed_dim, bb.patch_size, bb.img_size) == ("image", 128, 32, 224)
    assert tokens.shape == (2, 2 * 2, 128)
    # the embedding is the projection of the mean of those tokens
    proj = vlp.backbone_img.global_embedder
    assert torch.allclose(proj(tokens.mean(1)), emb, atol=1e-5)


def test_text_tower_and_tokenizer_match_official_code(loaded):
    bb, e = loaded
    vlp = bb.model.image_model.vlp
    prompts = (FIX / "texts.txt").read_text().splitlines()
    toks = vlp.tokenize(prompts)
    assert torch.equal(toks["input_ids"], e["input_ids"]) and toks["input_ids"].shape == (4, 77)
    with torch.no_grad():
        emb = vlp.encode_text(prompts)
    assert (emb - e["text_emb"]).abs().max().item() <= TOL


def _official_aggregation(hidden, ids, vocab):
    """The authors' BertEncoder.aggregate_tokens + mean over words + sum over the last 4 layers, written out
    word by word (pieces '##x' join the previous word; stop after [SEP]; zero-padded to the token length)."""
    emb = torch.stack(hidden[-4:]).permute(1, 2, 0, 3)  # [B, L, layers, D]
    out = []
    for b in range(ids.shape[0]):
        words, bank = [], []
        for t in range(ids.shape[1]):
            piece = vocab[int(ids[b, t])]
            if piece == "[SEP]":
                words.append(torch.stack(bank).sum(0))
                words.append(emb[b, t])
                break
            if piece.startswith("##"):
                bank.append(emb[b, t])
            else:
                if bank:
                    words.append(torch.stack(bank).sum(0))
                bank = [emb[b, t]]
        padded = torch.cat([torch.stack(words), torch.zeros(ids.shape[1] - len(words), *emb.shape[2:])])
        out.append(padded.mean(0).sum(0))
    return torch.stack(out)


def test_sentence_embedding_equals_word_piece_aggregation():
    vocab = ["[PAD]", "[CLS]", "[SEP]", "a", "##b", "##c", "d"]
    ids = torch.tensor([[1, 3, 4, 5, 6, 2, 0, 0], [1, 6, 3, 2, 0, 0, 0, 0]])
    g = torch.Generator().manual_seed(0)
    hidden = tuple(torch.randn(2, 8, 5, generator=g) for _ in range(6))
    ours = sentence_embedding(hidden, ids, sep_id=2)
    assert torch.allclose(ours, _official_aggregation(hidden, ids, vocab), atol=1e-6)
    with pytest.raises(ValueError, match=r"\[SEP\]"):
        sentence_embedding(hidden, torch.ones(2, 8, dtype=torch.long), sep_id=2)


def test_bare_path_is_recognised_as_surgvlp_not_resnet50():
    assert detect_kind(FIX / "surgvlp_tiny.pth", "?") == "surgvlp"


def test_zero_shot_logits_are_scaled_cosines():
    img, txt = torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert torch.allclose(zero_shot_logits(img, txt), torch.tensor([[60.0, 80.0]]))


def test_missing_unexpected_and_foreign_keys_fail_naming_them(tmp_path):
    sd = torch.load(FIX / "surgvlp_tiny.pth", weights_only=True)
    broken = {k: v for k, v in sd.items() if k != "backbone_text.model.encoder.layer.2.output.dense.bias"}
    with pytest.raises(CheckpointError, match=r"encoder\.layer\.2\.output\.dense\.bias"):
        build_surgvlp(broken, source="x.pth", text_heads=2)
    extra = dict(sd, **{"backbone_img.model.layer4.0.bogus": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"layer4\.0\.bogus"):
        build_surgvlp(extra, source="x.pth", text_heads=2)
    bad_pos = dict(sd, **{"backbone_text.model.embeddings.position_ids": torch.arange(80).flip(0)[None]})
    with pytest.raises(CheckpointError, match="position_ids"):
        build_surgvlp(bad_pos, source="x.pth", text_heads=2)
    p = tmp_path / "other.pth"
    torch.save(dict(sd, **{"neck.weight": torch.zeros(1)}), p)
    with pytest.raises(CheckpointError, match=r"neck\.weight"):
        load_backbone(f"surgvlp:{p}?text_heads=2")
    with pytest.raises(CheckpointError, match="text_heads"):
        build_surgvlp(sd, source="x.pth")  # width 32 is not a multiple of 64: heads must be given
