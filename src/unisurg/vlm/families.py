"""Model families: how a local transformers checkpoint is loaded and how a question is put to it.

============  ===================================  ==================  ===========  ======
family        config ``model_type``                text format         new tokens   video
============  ===================================  ==================  ===========  ======
qwen2_5_vl    qwen2_5_vl                           chat template       16           yes
qwen3_vl      qwen3_vl, qwen3_vl_moe               chat template       16           yes
llava_next    llava_next                           ``USER: ... ASSISTANT:`` 32      no
llava_ov      llava_onevision                      chat template       16           yes
internvl      internvl (the ``-hf`` checkpoints)   chat template       16           yes
============  ===================================  ==================  ===========  ======

Every family loads through ``AutoModelForImageTextToText`` and ``AutoProcessor`` (SurgRec: Qwen
through the Auto classes, LLaVA-NeXT through ``LlavaNextForConditionalGeneration``, which is what the
Auto class resolves to). The numbers of new tokens and LLaVA-NeXT's Vicuna-style text
``"USER: <image>\\n{question}\\nASSISTANT:"`` are SurgRec's; the other two families follow Qwen.
InternVL's original remote-code checkpoints (``trust_remote_code``) are not supported: use the
transformers-format ``OpenGVLab/InternVL3-*-hf`` ones.

Without torchvision, transformers 5 cannot build the processor of a family that also takes video
(its video processor needs torchvision), although images need none: then the processor is built
from the same files with a placeholder video processor (:func:`load_processor`), and video input
is refused with a clear error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from unisurg.device import DeviceError, resolve_device


class ModelLoadError(RuntimeError):
    """A model folder that is not a supported VLM checkpoint (the message says what was found)."""


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    processor_class: str  # transformers class name, for the torchvision-free fallback
    text_format: str  # "chat": the processor's chat template; "vicuna": SurgRec's USER/ASSISTANT text
    max_new_tokens: int
    video: bool
    image_token: str = "<image>"  # only for text_format="vicuna"


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("qwen2_5_vl", ("qwen2_5_vl",), "Qwen2_5_VLProcessor", "chat", 16, True),
    Family("qwen3_vl", ("qwen3_vl", "qwen3_vl_moe"), "Qwen3VLProcessor", "chat", 16, True),
    Family("llava_next", ("llava_next",), "LlavaNextProcessor", "vicuna", 32, False),
    Family("llava_ov", ("llava_onevision",), "LlavaOnevisionProcessor", "chat", 16, True),
    Family("internvl", ("internvl",), "InternVLProcessor", "chat", 16, True),
)}


def model_type(model_dir: Path) -> str:
    cfg = Path(model_dir) / "config.json"
    if not cfg.is_file():
        raise ModelLoadError(f"{model_dir}: no config.json; pass the folder of a transformers checkpoint "
                             "(config.json, *.safetensors, tokenizer and processor files)")
    try:
        return str(json.loads(cfg.read_text(encoding="utf-8")).get("model_type", ""))
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{cfg}: invalid JSON ({e.msg})") from None


def detect_family(model_dir: Path, name: str | None = None) -> Family:
    """The family named ``name``, or the one whose ``model_type`` the checkpoint's config.json has."""
    if name:
        if name not in FAMILIES:
            raise ModelLoadError(f"unknown VLM family {name!r}; families: {', '.join(FAMILIES)}")
        return FAMILIES[name]
    mt = model_type(model_dir)
    for f in FAMILIES.values():
        if mt in f.model_types:
            return f
    known = ", ".join(t for f in FAMILIES.values() for t in f.model_types)
    raise ModelLoadError(f"{model_dir}: model_type {mt!r} is not a supported VLM ({known}); pass --family to force one")


def torchvision_available() -> bool:
    from transformers.utils import is_torchvision_available

    return bool(is_torchvision_available())


def _image_only_processor_class(cls):
    """``cls`` whose video processor is a placeholder (transformers 5 needs torchvision to build a video
    processor; the image path needs none). Video input through it raises a clear error."""
    from transformers import AutoImageProcessor, AutoTokenizer
    from transformers.video_processing_utils import VideoProcessorMixin

    class NoVideoProcessor(VideoProcessorMixin):
        def __call__(self, *args, **kwargs):
            raise ModelLoadError("video input needs torchvision (transformers' video processors use it); "
                                 "install torchvision or use --input middle / frames:N")

    class ImageOnly(cls):
        @classmethod
        def _resolve_subprocessors(klass, path, processor_dict, **kwargs):
            # transformers >= 5.25 builds the sub-processors here and skips one passed in
            kwargs.setdefault("video_processor", NoVideoProcessor())
            return super()._resolve_subprocessors(path, processor_dict, **kwargs)

        @classmethod
        def _get_arguments_from_pretrained(klass, path, processor_dict=None, **kwargs):  # transformers < 5.25
            kwargs.pop("subfolder", None)
            args = []
            for attr in klass.get_attributes():
                if attr == "video_processor":
                    args.append(NoVideoProcessor())
                elif "tokenizer" in attr:
                    args.append(AutoTokenizer.from_pretrained(path, **kwargs))
                elif attr == "image_processor":
                    args.append(AutoImageProcessor.from_pretrained(path, **kwargs))
                else:
                    raise ModelLoadError(f"{cls.__name__}: cannot build its {attr} without torchvision")
            return args

        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor":
                return type(argument)
            return super().check_argument_for_proper_class(argument_name, argument)

    ImageOnly.__name__ = cls.__name__
    return ImageOnly


def load_processor(model_dir: Path, family: Family):
    """``AutoProcessor`` of the checkpoint; without torchvision, the image-only build (module docstring).
    Left padding, as batched generation needs."""
    import transformers
    from transformers import AutoProcessor

    if family.video and not torchvision_available():
        proc = _image_only_processor_class(getattr(transformers, family.processor_class)).from_pretrained(str(model_dir))
    else:
        proc = AutoProcessor.from_pretrained(str(model_dir))
    tok = proc.tokenizer
    tok.padding_side = "left"
    if tok.pad_token is None:  # batched generation pads; a checkpoint without a pad token pads with EOS
        tok.pad_token = tok.eos_token
    return proc


def resolve_device_dtype(device: str, dtype: str) -> tuple[torch.device, torch.dtype]:
    """``auto``: CUDA when present; bf16 on GPU, float32 on CPU (bf16 matmuls are slow on most CPUs)."""
    try:
        dev = resolve_device(device)
    except DeviceError as e:
        raise ModelLoadError(str(e)) from None
    table = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    if dtype == "auto":
        return dev, (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    if dtype not in table:
        raise ModelLoadError(f"dtype={dtype!r}: use auto, bfloat16, float16 or float32")
    return dev, table[dtype]


def load_model(model_dir: Path, device: torch.device, dtype: torch.dtype):
    """``AutoModelForImageTextToText`` in ``dtype`` on ``device``, eval mode, SDPA attention."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(str(model_dir), dtype=dtype, attn_implementation="sdpa")
    return model.to(device).eval()


def question_text(processor, family: Family, question: str, n_images: int, video: bool) -> str:
    """The full model input text of one question with ``n_images`` images (or one video) before it."""
    if family.text_format == "vicuna":
        if video:
            raise ModelLoadError(f"family {family.name} takes no video input; use --input middle or frames:N")
        return "USER: " + f"{family.image_token}\n" * n_images + f"{question}\nASSISTANT:"
    media = [{"type": "video"}] if video else [{"type": "image"}] * n_images
    messages = [{"role": "user", "content": [*media, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
