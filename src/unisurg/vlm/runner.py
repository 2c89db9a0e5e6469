"""``run_study``: a VLM answers every (sample, prompt) of a dataset split; resumable and sharded.

    from unisurg.vlm.runner import run_study, merge_study
    run_study("ckpt/Qwen2.5-VL-7B-Instruct", "synthetic", "data/synth", "vlm-out", cfg, shard=(0, 2))
    run_study(..., shard=(1, 2))              # another process or GPU
    merge_study("vlm-out")                    # report over both shards

The run folder holds ``run.json`` (the settings and prompt texts every shard and every resumed run
must share), ``samples.json`` (key, group, label of every sample), the answer logs
(:mod:`unisurg.vlm.answers`) and, once complete, the report (:mod:`unisurg.vlm.report`).
Generation: greedy, ``max_new_tokens`` of the family, batches of ``batch_size`` samples of one
prompt (left-padded), bf16 on GPU. Shard ``i`` of ``n`` (0-based) takes samples ``i, i+n, ...``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from tqdm import tqdm

from unisurg.atomic_files import write_atomic
from unisurg.vlm.answers import AnswerLog, answer_file, read_answers
from unisurg.vlm.config import VLMConfig
from unisurg.vlm.families import (
    Family,
    ModelLoadError,
    detect_family,
    load_model,
    load_processor,
    question_text,
    resolve_device_dtype,
    torchvision_available,
)
from unisurg.vlm.inputs import StudyData, load_study_data
from unisurg.vlm.prompts import Prompt, build_prompts
from unisurg.vlm.report import write_report

RUN_NAME = "run.json"
SAMPLES_NAME = "samples.json"


class StudyError(RuntimeError):
    """A run folder that does not fit the run asked for (other settings, incomplete shards)."""


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (0 <= i < n) -> (i, n)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: write i/n, e.g. 0/4 (shard i of n, counted from 0)") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def _write_json(path: Path, obj) -> None:
    write_atomic(path, lambda f: f.write(json.dumps(obj, indent=1, ensure_ascii=False).encode()))


def run_settings(model_dir: Path, family: Family, data: StudyData, root: Path, cfg: VLMConfig, dtype: torch.dtype,
                 prompts: list[Prompt]) -> dict:
    """What makes two runs' answers interchangeable (checked on resume and between shards)."""
    digest = hashlib.sha1(json.dumps([[s.key, s.label, list(s.indices)] for s in data.samples]).encode()).hexdigest()
    return {
        "model": str(Path(model_dir).resolve()), "family": family.name, "dataset": data.dataset,
        "root": str(Path(root).resolve()), "split": cfg.split, "split_scheme": data.split_scheme,
        "input": cfg.input, "frames": cfg.n_frames(), "anchor": cfg.anchor, "stride": cfg.stride,
        "max_samples": cfg.max_samples, "short_side": cfg.short_side,
        "max_new_tokens": cfg.max_new_tokens or family.max_new_tokens, "dtype": str(dtype).removeprefix("torch."),
        "class_names": list(data.class_names), "n_samples": len(data.samples), "samples_sha1": digest,
        "prompts": {p.name: {"template": p.template, "order": p.order, "options": list(p.options), "text": p.text}
                    for p in prompts},
    }


def reconcile_run(out: Path, settings: dict) -> dict:
    """Write ``run.json``, or check the existing one: same settings; prompts may be added, not changed."""
    path = Path(out) / RUN_NAME
    if not path.is_file():
        _write_json(path, settings)
        return settings
    old = json.loads(path.read_text(encoding="utf-8"))
    diff = [k for k in settings if k != "prompts" and old.get(k) != settings[k]]
    if diff:
        shown = "; ".join(f"{k}: {old.get(k)!r} there, {settings[k]!r} now" for k in diff[:4])
        raise StudyError(f"{path}: the answers there were made with other settings ({shown}); "
                         "use another --out or the same settings")
    clash = [n for n, p in settings["prompts"].items() if n in old["prompts"] and old["prompts"][n] != p]
    if clash:
        raise StudyError(f"{path}: prompt(s) {clash} have other texts there than now")
    merged = dict(old)
    merged["prompts"] = {**old["prompts"], **settings["prompts"]}
    if merged != old:
        _write_json(path, merged)
    return merged


def batch_media(data: StudyData, samples: list, cfg: VLMConfig) -> list:
    """The pixels of a batch: every sample's images in order, or one ``[T, H, W, 3]`` array per sample (video)."""
    if cfg.input == "video":
        return [data.frames_array(s) for s in samples]
    return [im for s in samples for im in data.images(s)]


def model_inputs(processor, family: Family, samples: list, media: list, prompt: Prompt, cfg: VLMConfig):
    """The processor's batch for one prompt and a few samples (resizing, tokens; left-padded)."""
    video = cfg.input == "video"
    if video and not family.video:
        raise ModelLoadError(f"family {family.name} takes no video input; use input=middle or input=frames")
    texts = [question_text(processor, family, prompt.text, len(s.indices), video) for s in samples]
    if video:
        return processor(text=texts, videos=media, return_tensors="pt", padding=True)
    return processor(text=texts, images=media, return_tensors="pt", padding=True)


@torch.inference_mode()
def generate_answers(model, processor, inputs, max_new_tokens: int) -> list[str]:
    """Greedy answers to one batch of :func:`model_inputs` (raw decoded text, stripped)."""
    inputs = inputs.to(model.device)
    for k, v in inputs.items():  # pixels in the model's dtype (bf16 on GPU); ids and masks stay integer
        if torch.is_floating_point(v):
            inputs[k] = v.to(model.dtype)
    out = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens,
                         pad_token_id=processor.tokenizer.pad_token_id)
    new = out[:, inputs["input_ids"].shape[1]:]
    return [t.strip() for t in processor.batch_decode(new, skip_special_tokens=True)]


def batches(todo: list[tuple[Prompt, list]], batch_size: int, limit: int | None):
    """(prompt, samples) batches in order, at most ``limit`` samples in all."""
    left = limit
    for prompt, samples in todo:
        for b in range(0, len(samples), batch_size):
            batch = samples[b:b + batch_size] if left is None else samples[b:b + min(batch_size, left)]
            if not batch:
                return
            yield prompt, batch
            if left is not None:
                left -= len(batch)


def run_study(model_dir: Path | str, dataset: str, root: Path | str, out: Path | str, cfg: VLMConfig, *,
              shard: tuple[int, int] = (0, 1), strict: bool = True, limit: int | None = None,
              progress: bool = False, log: Callable[[str], None] = print) -> dict:
    """Answer the shard's (sample, prompt) pairs not yet in the folder's logs; report when the run is
    complete and unsharded. ``limit``: stop after that many new answers (a clean stop, as a kill would be).
    Returns ``{"answered": new answers, "pending": pairs left in this shard, "report": path or None}``."""
    model_dir, root, out = Path(model_dir), Path(root), Path(out)
    family = detect_family(model_dir, cfg.family)
    if cfg.input == "video" and not family.video:
        raise ModelLoadError(f"family {family.name} takes no video input; use input=middle or input=frames")
    if cfg.input == "video" and not torchvision_available():
        raise ModelLoadError("input=video needs torchvision (transformers' video processors use it); install it or "
                             "use input=middle / input=frames")
    device, dtype = resolve_device_dtype(cfg.device, cfg.dtype)
    data = load_study_data(dataset, root, cfg, strict=strict, progress=progress)
    prompts = build_prompts(cfg.prompts, data.class_names)
    out.mkdir(parents=True, exist_ok=True)
    reconcile_run(out, run_settings(model_dir, family, data, root, cfg, dtype, prompts))
    _write_json(out / SAMPLES_NAME, [{"key": s.key, "group": s.group, "label": s.label, "media": s.media,
                                      "indices": list(s.indices)} for s in data.samples])
    i, n = shard
    mine = data.samples[i::n]
    done = read_answers(out)
    todo = [(p, [s for s in mine if (s.key, p.name) not in done]) for p in prompts]
    pending = sum(len(t) for _, t in todo)
    log(f"vlm: {family.name} on {dataset}/{cfg.split}: {len(data.samples)} samples x {len(prompts)} prompts; "
        f"shard {i}/{n}: {len(mine) * len(prompts) - pending} answered, {pending} to do")
    answered = 0
    if pending:
        processor = load_processor(model_dir, family)
        model = load_model(model_dir, device, dtype)
        max_new = cfg.max_new_tokens or family.max_new_tokens
        bar = None
        if progress:
            bar = tqdm(total=pending, desc="vlm answers", unit="answer")
        work = list(batches(todo, cfg.batch_size, limit))
        # the next batch's frames are read and decoded on a thread while the model generates (the processor
        # stays on this thread: a fast tokenizer used from two threads at once can fail)
        with AnswerLog(answer_file(out, shard)) as alog, ThreadPoolExecutor(1) as pool:
            fetch = lambda k: pool.submit(batch_media, data, work[k][1], cfg)  # noqa: E731
            nxt = fetch(0) if work else None
            for k, (prompt, batch) in enumerate(work):
                media = nxt.result()
                nxt = fetch(k + 1) if k + 1 < len(work) else None
                inputs = model_inputs(processor, family, batch, media, prompt, cfg)
                answers = generate_answers(model, processor, inputs, max_new)
                alog.append([{"sample": s.key, "prompt": prompt.name, "answer": a} for s, a in zip(batch, answers)])
                answered += len(batch)
                if bar is not None:
                    bar.update(len(batch))
        if bar is not None:
            bar.close()
    left = pending - answered
    report = None
    if left == 0 and n == 1:
        report = merge_study(out, probe_results=cfg.probe_results, surgrec_name=cfg.surgrec_name,
                             bootstrap_n=cfg.bootstrap_n, bootstrap_seed=cfg.bootstrap_seed, log=log)
    elif left == 0:
        log(f"vlm: shard {i}/{n} complete; when every shard is, run `unisurg vlm-merge {out}`")
    return {"answered": answered, "pending": left, "report": report}


def merge_study(out: Path | str, *, probe_results: Path | str | None = None, surgrec_name: str | None = None,
                bootstrap_n: int | None = None, bootstrap_seed: int | None = None,
                log: Callable[[str], None] = print) -> Path:
    """Read every answer log of the folder, check that each (sample, prompt) of ``run.json`` is answered,
    and write the report (:func:`unisurg.vlm.report.write_report`). Returns the report's path."""
    out = Path(out)
    if not (out / RUN_NAME).is_file() or not (out / SAMPLES_NAME).is_file():
        raise StudyError(f"{out}: no {RUN_NAME} / {SAMPLES_NAME}; is this the --out folder of `unisurg vlm`?")
    run = json.loads((out / RUN_NAME).read_text(encoding="utf-8"))
    samples = json.loads((out / SAMPLES_NAME).read_text(encoding="utf-8"))
    answers = read_answers(out)
    missing = [(s["key"], p) for p in run["prompts"] for s in samples if (s["key"], p) not in answers]
    if missing:
        raise StudyError(f"{out}: {len(missing)} of {len(samples) * len(run['prompts'])} answers missing "
                         f"(e.g. sample {missing[0][0]!r}, prompt {missing[0][1]!r}); finish every shard "
                         "(rerun the same command: it resumes) before merging")
    defaults = VLMConfig()
    path = write_report(out, run, samples, answers, probe_results=probe_results,
                        surgrec_name=surgrec_name or run["dataset"],
                        bootstrap_n=defaults.bootstrap_n if bootstrap_n is None else bootstrap_n,
                        bootstrap_seed=defaults.bootstrap_seed if bootstrap_seed is None else bootstrap_seed)
    log(f"vlm: report {path}")
    return path
