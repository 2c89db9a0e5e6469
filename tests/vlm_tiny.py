"""Tiny random vision-language checkpoints made offline, for the VLM-study tests.

Each builder writes a folder laid out like a real checkpoint (config.json, model.safetensors,
tokenizer.json with a chat template, preprocessor/processor configs) by ``save_pretrained``, from
the family's transformers config class with a few-dimension text and vision tower, a word-level
``tokenizers`` vocabulary holding the family's special tokens, and the PIL ("slow") image processor.
The runner then loads it with the same calls as a real checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# words the random models can say: option letters, digits and the synthetic world's phase-name words
WORDS = ("A B C D E F G H a b I think it is the option phase 0 1 2 3 4 5 6 7 Preparation CalotTriangleDissection "
         "ClippingCutting GallbladderDissection GallbladderPackaging CleaningCoagulation GallbladderRetraction . : \n"
         "user assistant USER: ASSISTANT:").split(" ")

QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                "<|video_pad|>"]
# a ChatML template (the layout of the Qwen and LLaVA-OneVision chat models), written here for the tests
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
          "{% if c['type'] == 'image' %}{{ IMG }}{% elif c['type'] == 'video' %}{{ VID }}"
          "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _tokenizer(special: list[str], pad: str, eos: str, chat_template: str | None, extra: dict | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(dict.fromkeys(["[UNK]", *special, *WORDS]))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tk.add_special_tokens(special)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token=pad, eos_token=eos,
                                  **({"extra_special_tokens": extra} if extra else {}))
    if chat_template:
        tok.chat_template = chat_template
    return tok, vocab


def _save(model_cfg, tok, image_processor, processor_config: dict, out: Path, seed: int) -> Path:

    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(model_cfg)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    image_processor.save_pretrained(out)
    (out / "processor_config.json").write_text(json.dumps(processor_config))
    return out


def qwen2_5_vl(out: Path, seed: int = 0) -> Path:
    from transformers import Qwen2_5_VLConfig
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    tmpl = CHATML.replace("{{ IMG }}", "<|vision_start|><|image_pad|><|vision_end|>").replace(
        "{{ VID }}", "<|vision_start|><|video_pad|><|vision_end|>")
    tok, v = _tokenizer(QWEN_SPECIAL, "<|endoftext|>", "<|im_end|>", tmpl)
    cfg = Qwen2_5_VLConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, initializer_range=0.5,
                         num_key_value_heads=1, vocab_size=len(tok), max_position_embeddings=1024,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2]},
                         eos_token_id=v["<|im_end|>"], pad_token_id=v["<|endoftext|>"], bos_token_id=v["<|endoftext|>"]),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[0]),
        image_token_id=v["<|image_pad|>"], video_token_id=v["<|video_pad|>"],
        vision_start_token_id=v["<|vision_start|>"], vision_end_token_id=v["<|vision_end|>"])
    ip = Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
    return _save(cfg, tok, ip, {"processor_class": "Qwen2_5_VLProcessor"}, out, seed)


def qwen3_vl(out: Path, seed: int = 0) -> Path:
    from transformers import Qwen3VLConfig
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    tmpl = CHATML.replace("{{ IMG }}", "<|vision_start|><|image_pad|><|vision_end|>").replace(
        "{{ VID }}", "<|vision_start|><|video_pad|><|vision_end|>")
    tok, v = _tokenizer(QWEN_SPECIAL, "<|endoftext|>", "<|im_end|>", tmpl)
    cfg = Qwen3VLConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, head_dim=16,
                         initializer_range=0.5, num_key_value_heads=1, vocab_size=len(tok), max_position_embeddings=1024,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2],
                                          "mrope_interleaved": True},
                         eos_token_id=v["<|im_end|>"], pad_token_id=v["<|endoftext|>"], bos_token_id=v["<|endoftext|>"]),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32, patch_size=16,
                           spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                           deepstack_visual_indexes=[0]),
        image_token_id=v["<|image_pad|>"], video_token_id=v["<|video_pad|>"],
        vision_start_token_id=v["<|vision_start|>"], vision_end_token_id=v["<|vision_end|>"])
    ip = Qwen2VLImageProcessorPil(min_pixels=32 * 32 * 4, max_pixels=32 * 32 * 16, patch_size=16, merge_size=2)
    return _save(cfg, tok, ip, {"processor_class": "Qwen3VLProcessor"}, out, seed)


def llava_next(out: Path, seed: int = 0) -> Path:
    from transformers import LlavaNextConfig
    from transformers.models.llava_next.image_processing_pil_llava_next import (
        LlavaNextImageProcessorPil,
    )

    tok, v = _tokenizer(["<s>", "</s>", "<image>"], "<s>", "</s>", None)
    cfg = LlavaNextConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                           num_attention_heads=2, image_size=28, patch_size=14, projection_dim=16),
        text_config=dict(model_type="llama", hidden_size=32, initializer_range=0.5, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, vocab_size=len(tok), max_position_embeddings=2048,
                         eos_token_id=v["</s>"], pad_token_id=v["<s>"], bos_token_id=v["<s>"]),
        image_token_index=v["<image>"], image_grid_pinpoints=[[28, 28], [28, 56], [56, 28]], vision_feature_layer=-1,
        vision_feature_select_strategy="default")
    ip = LlavaNextImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                                    image_grid_pinpoints=[[28, 28], [28, 56], [56, 28]])
    proc_cfg = {"processor_class": "LlavaNextProcessor", "patch_size": 14, "vision_feature_select_strategy": "default",
                "num_additional_image_tokens": 1, "image_token": "<image>"}
    return _save(cfg, tok, ip, proc_cfg, out, seed)


def llava_onevision(out: Path, seed: int = 0) -> Path:
    from transformers import LlavaOnevisionConfig
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    tmpl = CHATML.replace("{{ IMG }}", "<image>\n").replace("{{ VID }}", "<video>\n")
    tok, v = _tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"], "<|endoftext|>",
                        "<|im_end|>", tmpl)
    cfg = LlavaOnevisionConfig(
        vision_config=dict(model_type="siglip_vision_model", hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                           num_attention_heads=2, image_size=28, patch_size=14),
        text_config=dict(model_type="qwen2", hidden_size=32, initializer_range=0.5, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, vocab_size=len(tok), max_position_embeddings=2048,
                         eos_token_id=v["<|im_end|>"], pad_token_id=v["<|endoftext|>"]),
        image_token_index=v["<image>"], video_token_index=v["<video>"], image_grid_pinpoints=[[28, 28], [28, 56], [56, 28]],
        vision_feature_layer=-1, vision_feature_select_strategy="full")
    ip = LlavaOnevisionImageProcessorPil(size={"height": 28, "width": 28}, image_grid_pinpoints=[[28, 28], [28, 56], [56, 28]])
    proc_cfg = {"processor_class": "LlavaOnevisionProcessor", "num_image_tokens": 4,
                "vision_feature_select_strategy": "full", "vision_aspect_ratio": "anyres_max_9"}
    return _save(cfg, tok, ip, proc_cfg, out, seed)


def internvl(out: Path, seed: int = 0) -> Path:
    from transformers import InternVLConfig
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import (
        GotOcr2ImageProcessorPil,
    )

    extra = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
             "video_token": "<video>"}
    tmpl = CHATML.replace("{{ IMG }}", "<IMG_CONTEXT>\n").replace("{{ VID }}", "<video>\n")
    tok, v = _tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", *extra.values()], "<|endoftext|>", "<|im_end|>",
                        tmpl, extra)
    cfg = InternVLConfig(
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=[28, 28], patch_size=[14, 14]),
        text_config=dict(model_type="qwen2", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         initializer_range=0.5, num_attention_heads=2, num_key_value_heads=1, vocab_size=len(tok),
                         max_position_embeddings=2048, eos_token_id=v["<|im_end|>"], pad_token_id=v["<|endoftext|>"]),
        image_token_id=v["<IMG_CONTEXT>"], image_seq_length=1, downsample_ratio=0.5)
    ip = GotOcr2ImageProcessorPil(size={"height": 28, "width": 28}, crop_to_patches=True, min_patches=1, max_patches=2)
    return _save(cfg, tok, ip, {"processor_class": "InternVLProcessor", "image_seq_length": 1}, out, seed)


BUILDERS = {"qwen2_5_vl": qwen2_5_vl, "qwen3_vl": qwen3_vl, "llava_next": llava_next, "llava_ov": llava_onevision, "internvl": internvl}
