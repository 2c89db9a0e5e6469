"""Full fine-tuning of a registry backbone with a task head on a benchmark dataset (``unisurg finetune``).

    from unisurg.evaluation.finetune import finetune
    run = finetune("unisurg:runs/tiny/final", "synthetic", "data/synth", config="tiny",
                   overrides=["run.out=ft-out"])

What it reuses: the benchmark's datasets, tasks, clip protocol and augmentation (``prepare``,
:class:`~unisurg.backbones.features.OnlineClips`), its metrics, bootstrap CIs, tables and ribbons
(``results.json`` in the same format, rows labelled "fine-tuned"); the pretraining's process group,
DDP / FSDP2 wrapping, full-state checkpoints, RNG capture, atomic directories, AdamW groups and
step-indexed schedules (:mod:`unisurg.train`).

One step (``Finetuner._step``): uint8 clips -> normalised on the device -> mixup / cutmix (seeded by the
step) -> backbone + head under bf16 autocast (CUDA) -> soft-target cross-entropy / BCE / regression loss ->
backward (DDP all-reduce or FSDP2 reduce-scatter) -> gradient clipping -> this step's LR (x each layer's
decay) and weight decay -> AdamW -> EMA of the weights (optional).

Run folder ``run.out``::

    checkpoints/step_XXXXXXXX/   model.safetensors, ema.safetensors, train_state.pt (atomic directories)
    checkpoints/latest.json
    best/                        the exported model chosen on validation (model.json + weights.safetensors
                                 [+ backbone/ in our encoder format]); `unisurg predict VIDEO --model best`
    log.jsonl                    one record per logged step; validation records carry "val"
    results.json, table.md/.csv/.tex, figures/, runs/<dataset>/<label>/run.json

Exact resume (``--resume``): the data order is a function of (seed, epoch), augmentation of (seed,
epoch, sample), mixing of (seed, step), schedules of the step; checkpoints hold weights, optimizer,
EMA, every rank's RNG (stochastic depth, dropout), the position in the epoch and the best-so-far.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset

from unisurg.atomic_files import write_atomic, write_bytes_atomic, write_json_atomic
from unisurg.backbones.features import ClipPixels, OnlineClips, norm_stats
from unisurg.backbones.registry import load_backbone
from unisurg.data.pixels import to_model_input
from unisurg.evaluation.figures import write_figures
from unisurg.evaluation.finetune_config import (
    FINETUNE_TASKS,
    FinetuneConfig,
    load_finetune_config,
)
from unisurg.evaluation.finetune_export import MODEL_FORMAT, WEIGHTS, write_export
from unisurg.evaluation.finetune_mixing import (
    MixDraw,
    draw_mix,
    finetune_loss,
    mix_inputs,
    mixes,
)
from unisurg.evaluation.finetune_model import (
    FinetuneModel,
    build_head,
    enable_activation_checkpointing,
    find_blocks,
    head_json,
    layer_index_fn,
    set_drop_path,
)
from unisurg.evaluation.finetune_views import TestViews
from unisurg.evaluation.head_selection import confidence_intervals, flat_metrics
from unisurg.evaluation.report import write_tables
from unisurg.evaluation.runner import (
    RESULTS_NAME,
    BenchError,
    PreparedDataset,
    _figure_payload,
    check_protocol,
    image_frames,
    load_results,
    prepare,
    slug,
)
from unisurg.models.ema import ema_update_, make_target
from unisurg.models.vit import VideoViT
from unisurg.train import checkpointing as ckpt
from unisurg.train.distributed import (
    all_gather_object,
    all_reduce_mean,
    barrier,
    broadcast_object,
    init_distributed,
    shard_fsdp,
    shutdown,
    unwrap,
    wrap_ddp,
)
from unisurg.train.logs import RunLogger
from unisurg.train.optim import (
    Schedules,
    build_optimizer,
    grad_norm,
    layer_decay_groups,
    set_hyperparams,
)
from unisurg.typed_config import ConfigError, config_differences, to_dict

STATE_WEIGHTS = "model.safetensors"
EMA_WEIGHTS = "ema.safetensors"
FINETUNED = "fine-tuned"
SELECTED_LABEL = "fine-tuned (checkpoint selected on validation)"
# keys a resumed run may change: they do not alter the trajectory
RESUME_MAY_CHANGE = {"run.out", "run.strategy", "run.checkpoint_every", "run.keep_last", "run.workers", "run.threads",
                     "run.progress", "run.log_every", "report.figures", "report.max_figures", "ingest_workers"}


class FinetuneError(BenchError):
    """A fine-tuning run that cannot go as asked; the message says why and what to change."""


# -- data order -----------------------------------------------------------------------------------


def epoch_batches(n: int, epoch: int, seed: int, global_batch: int) -> list[np.ndarray]:
    """The epoch's global batches: a permutation of ``n`` samples keyed by ``(seed, epoch)``, cut into
    ``n // global_batch`` full batches (the remainder is dropped, as every rank needs the same count)."""
    order = np.random.default_rng([seed, epoch, 7]).permutation(n)
    return [order[b * global_batch:(b + 1) * global_batch] for b in range(n // global_batch)]


class _Indexed(Dataset):
    """``(clip, index)`` of an :class:`OnlineClips`: the loop reads each sample's target by its index."""

    def __init__(self, clips: OnlineClips):
        self.clips = clips

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, i):
        return self.clips[i], int(i)


# -- config checks --------------------------------------------------------------------------------




# -- the run --------------------------------------------------------------------------------------


@dataclass
class FinetuneResult:
    out: Path
    run: dict | None  # the results.json entry (rank 0), None elsewhere
    best_dir: Path
    steps: int
    start_step: int


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


class Finetuner:
    """Builds the run (data, model, optimiser, resume state); :meth:`fit` trains, validates and tests."""

    def __init__(self, backbone: str, dataset: str, root, cfg: FinetuneConfig, *, split_scheme: str | None = None,
                 resume: bool = False, strict: bool = True, log: Callable[[str], None] | None = None):
        self.cfg, self.backbone_spec, self.dataset = cfg, backbone, dataset
        self.info = info = init_distributed(cfg.run.device)
        self.log = log or (lambda m: print(f"[finetune] {m}", file=sys.stderr, flush=True))
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        self.out = Path(cfg.run.out)
        self.checkpoints = self.out / "checkpoints"
        self.resume_from = self._find_resume(resume)
        _seed_everything(cfg.train.seed)
        self.prep = self._prepare(dataset, root, split_scheme, strict)
        task = self.task = self.prep.task
        if task.name not in FINETUNE_TASKS:
            raise FinetuneError(f"{dataset}: task {task.name!r} cannot be fine-tuned here (supported: "
                                f"{', '.join(FINETUNE_TASKS)}); dense tasks use `unisurg bench`")
        if len(self.prep.folds) != 1:
            raise FinetuneError(f"{dataset}: split scheme {split_scheme!r} has {len(self.prep.folds)} folds; fine-tune "
                                "one fold at a time (e.g. --split-scheme loso_1)")
        self.fold = self.prep.folds[0]
        self.splits = self.fold.splits
        task.fit(self.splits["train"])

        # the model: trainable backbone + head, regularisers, device, EMA copy, DDP / FSDP2
        bb = load_backbone(backbone, device="cpu", trainable=True)
        try:
            check_protocol(task, bb, cfg)
        except BenchError as e:
            raise FinetuneError(str(e)) from None
        self.bb = bb
        self.mean, self.std = norm_stats(cfg, bb)
        found = find_blocks(bb.model)
        block_path, blocks = found if found is not None else (None, None)
        self.notes: list[str] = []
        if cfg.model.drop_path > 0 and set_drop_path(blocks, cfg.model.drop_path) == 0:
            self.notes.append(f"{bb.name} has no drop-path module in its blocks; model.drop_path is not applied")
        torch.manual_seed(cfg.train.seed)
        head = build_head(cfg.model.head, bb.embed_dim, task.out_dim, depth=cfg.model.head_depth,
                          heads=cfg.model.head_heads, init_scale=cfg.model.head_init_scale,
                          dropout=cfg.model.head_dropout, seed=cfg.train.seed)
        model = FinetuneModel(bb.model, head)
        if cfg.model.act_checkpoint and info.device.type == "cuda":
            if not enable_activation_checkpointing(bb.model, blocks):
                self.notes.append(f"{bb.name}: no block list found; activation checkpointing is off")
        self.encoder_config = bb.model.config if isinstance(bb.model, VideoViT) else None
        n_blocks = len(blocks) if blocks is not None else 0
        layer_of = layer_index_fn(block_path, n_blocks)
        model.to(info.device)
        self.ema = make_target(model) if cfg.train.use_ema else None
        strategy = cfg.run.strategy if info.distributed else "single"
        if strategy == "ddp":
            model = wrap_ddp(model, info)
        elif strategy == "fsdp":
            shard_fsdp(model, [blocks] if blocks is not None else [], info)
            if self.ema is not None:
                ema_blocks = find_blocks(self.ema.backbone)
                shard_fsdp(self.ema, [ema_blocks[1]] if ema_blocks else [], info, reshard_root=True)
        self.model = model
        if info.rank:  # weights are equal on every rank; stochastic depth and dropout should differ between ranks
            torch.manual_seed(cfg.train.seed + 1_000_003 * info.rank)
        groups = layer_decay_groups(unwrap(model), layer_of, n_blocks + 1, cfg.model.layer_decay)
        self.optimizer = build_optimizer(unwrap(model), cfg.optim, info.device, groups=groups)

        # the schedule
        n_train = len(self.splits["train"])
        G = cfg.train.batch_size
        if G % info.world:
            raise FinetuneError(f"train.batch_size={G} does not split over {info.world} processes; use a multiple")
        self.local_batch = G // info.world
        self.ipe = n_train // G
        if self.ipe < 1:
            raise FinetuneError(f"train.batch_size={G} exceeds the {n_train} training samples; lower it")
        self.total_steps = cfg.train.epochs * self.ipe
        self.schedules = Schedules(cfg.optim, cfg.ema, self.total_steps, self.ipe)
        self.autocast = torch.bfloat16 if cfg.run.dtype == "bf16" and info.device.type == "cuda" else None
        self.pixels = ClipPixels(self.prep.store, self.prep.ids, cfg.clip.res, image_frames(bb))
        self.train_clips = OnlineClips(self.pixels, self.splits["train"], cfg, seed=cfg.train.seed)
        w = task.state.get("class_weights") if cfg.train.class_weighting else None
        self.class_weights = torch.as_tensor(w, dtype=torch.float32, device=info.device) if w is not None else None
        self.key, self.higher = task.select_key()
        self.step = self.epoch = self.batches_done = 0
        self.best: dict | None = None  # {"value", "epoch", "step", "metrics"}
        self.val_history: list[dict] = []
        self.train_loss: list[float] = []
        if self.resume_from is not None:
            self._restore(self.resume_from)
        self.start_step = self.step

    # -- setup ----------------------------------------------------------------------------------

    def _prepare(self, dataset, root, split_scheme, strict) -> PreparedDataset:
        """Rank 0 reads the dataset and fills the frame store first; the others then find it ready."""
        quiet = (lambda m: None)
        prep = None
        if self.info.is_main:
            prep = prepare(dataset, root, split_scheme, self.cfg, strict=strict, progress=self.cfg.run.progress,
                           log=self.log)
        barrier(self.info)
        if not self.info.is_main:
            prep = prepare(dataset, root, split_scheme, self.cfg, strict=strict, progress=False, log=quiet)
        return prep

    def _find_resume(self, resume: bool) -> Path | None:
        found = None
        if self.info.is_main:
            ckpt.clean_temporaries(self.checkpoints)
            ckpt.clean_temporaries(self.out)
            found = ckpt.latest_checkpoint(self.checkpoints)
        found = broadcast_object(found, self.info)
        if found is not None and not resume:
            raise ConfigError(f"run.out={self.out} already holds a fine-tuning run (checkpoint {found.name}); pass "
                              "--resume to continue it, or choose another run.out")
        return found

    def _identity(self) -> dict:
        return {"backbone": self.backbone_spec, "dataset": self.dataset, "split_scheme": self.fold.name,
                "fingerprint": self.bb.fingerprint}

    def _restore(self, path: Path) -> None:
        state = torch.load(path / ckpt.STATE_NAME, map_location="cpu", weights_only=True)
        if state.get("format") != ckpt.STATE_FORMAT or state.get("kind") != "finetune":
            raise ConfigError(f"{path}: not a fine-tuning checkpoint of this version")
        diffs = config_differences(state["config"], to_dict(self.cfg), RESUME_MAY_CHANGE)
        diffs += [f"{k}: {state['identity'].get(k)!r} -> {v!r}" for k, v in self._identity().items()
                  if state["identity"].get(k) != v]
        if diffs:
            raise ConfigError(f"--resume: the run in {self.out} was started with other settings:\n  " + "\n  ".join(diffs)
                              + "\n  resume with the same settings, or choose another run.out")
        if state["world"] != self.info.world:
            raise ConfigError(f"--resume: {path} was written by {state['world']} processes, this run has "
                              f"{self.info.world}; an exact resume needs the same number")
        ckpt.load_student_state(self.model, self.optimizer, load_file(str(path / STATE_WEIGHTS)), state["optimizer"])
        if self.ema is not None:
            ckpt.load_module_state(self.ema, load_file(str(path / EMA_WEIGHTS)))
        self.step, self.epoch, self.batches_done = int(state["step"]), int(state["epoch"]), int(state["batches_done"])
        self.best = state["best"]
        self.val_history = list(state["val_history"])
        self.train_loss = list(state["train_loss"])
        ckpt.set_rng_state(state["rng"][self.info.rank])

    # -- checkpoints ------------------------------------------------------------------------------

    def save(self) -> None:
        """Collective: full state to rank 0, which writes ``checkpoints/step_N`` atomically."""
        model_sd, optim_sd = ckpt.gather_student_state(self.model, self.optimizer, self.info.distributed)
        ema_sd = ckpt.gather_module_state(self.ema, self.info.distributed) if self.ema is not None else None
        rngs = all_gather_object(ckpt.rng_state(), self.info)
        if self.info.is_main:
            state = {"format": ckpt.STATE_FORMAT, "kind": "finetune", "step": self.step, "epoch": self.epoch,
                     "batches_done": self.batches_done, "best": self.best, "val_history": self.val_history,
                     "train_loss": self.train_loss, "optimizer": optim_sd, "rng": rngs, "world": self.info.world,
                     "config": to_dict(self.cfg), "identity": self._identity()}

            def fill(tmp: Path) -> list[Path]:
                save_file({k: v.contiguous() for k, v in model_sd.items()}, str(tmp / STATE_WEIGHTS))
                files = [tmp / STATE_WEIGHTS]
                if ema_sd is not None:
                    save_file({k: v.contiguous() for k, v in ema_sd.items()}, str(tmp / EMA_WEIGHTS))
                    files.append(tmp / EMA_WEIGHTS)
                torch.save(state, tmp / ckpt.STATE_NAME)
                return files + [tmp / ckpt.STATE_NAME]

            name = ckpt.step_dir_name(self.step)
            ckpt.write_dir_atomically(self.checkpoints / name, fill)
            write_bytes_atomic(self.checkpoints / ckpt.LATEST_NAME, json.dumps({"step": self.step, "dir": name}).encode())
            ckpt.prune(self.checkpoints, self.cfg.run.keep_last, keep=name)
        barrier(self.info)

    def model_meta(self) -> dict:
        """``model.json`` of the export: everything :func:`unisurg.evaluation.finetune_predict.load_finetuned`
        needs to rebuild and feed the model."""
        cfg, bb, task = self.cfg, self.bb, self.task
        return {
            "format": MODEL_FORMAT, "version": 1, "task": task.name, "dataset": self.dataset,
            "split_scheme": self.fold.name, "class_names": list(self.prep.class_names), "task_state": task.state_json(),
            "clip": to_dict(cfg.clip),
            "norm": {"mean": list(self.mean), "std": list(self.std)},
            "input": "uint8 RGB clips [B, T, H, W, 3] (T = clip.frames, H = W = clip.res, frames read with the clip "
                     "protocol) -> (x / 255 - mean) / std as float [B, 3, T, H, W]; output logits [B, out_dim]",
            "backbone": {"spec": bb.spec, "name": bb.name, "kind": bb.kind, "embed_dim": bb.embed_dim,
                         "patch_size": bb.patch_size, "tubelet_size": bb.tubelet_size,
                         "pretrained_fingerprint": bb.fingerprint,
                         "weights": "backbone/ (our format)" if self.encoder_config is not None
                         else "weights.safetensors backbone.* (architecture from spec)"},
            "head": head_json(cfg.model.head, unwrap(self.model).head),
            "selection": {"metric": self.key, "on": "val", "val_source": self.fold.val_source,
                          "best": self.best},
            "test_views": to_dict(cfg.test), "use_ema": cfg.train.use_ema,
        }

    # -- evaluation -------------------------------------------------------------------------------

    def _eval_module(self) -> torch.nn.Module:
        return self.ema if self.ema is not None else unwrap(self.model)

    @torch.no_grad()
    def predict(self, split_name: str, views: bool) -> np.ndarray:
        """Task outputs (probabilities / scores) of every sample of a split, averaged over the test views
        (``views=False``: the centre view only). Samples are sharded over the processes and gathered;
        every process runs the same number of forwards (FSDP2 gathers weights collectively)."""
        split = self.splits[split_name]
        cfg, info = self.cfg, self.info
        ds = TestViews(self.pixels, split, cfg.test.temporal if views else 1, cfg.test.spatial if views else 1,
                       self.task.per_second)
        module = self._eval_module()
        was_training = module.training
        module.eval()
        n = len(split)
        per_rank = -(-n // info.world)
        mine = [info.rank + k * info.world for k in range(per_rank)]
        bs = cfg.train.eval_batch_size
        idx_out, vals = [], []
        for s in range(0, per_rank, bs):
            chunk = mine[s:s + bs]
            real = [i if i < n else 0 for i in chunk]
            clips = torch.stack([ds[i] for i in real])  # [b, V, T, H, W, 3]
            b, V = clips.shape[:2]
            x = to_model_input(clips.flatten(0, 1).to(info.device), self.mean, self.std, torch.float32)
            with torch.autocast(info.device.type, dtype=self.autocast or torch.float32,
                                enabled=self.autocast is not None):
                out = module(x).float()
            got = self.task.collect(out[None], split, np.repeat(real, V))[0]
            got = got.reshape(b, V, *got.shape[1:]).mean(axis=1)
            keep = [j for j, i in enumerate(chunk) if i < n]
            idx_out.extend(chunk[j] for j in keep)
            vals.append(got[keep])
        module.train(was_training)
        mine_vals = np.concatenate(vals) if vals else np.zeros((0,))
        parts = all_gather_object((idx_out, mine_vals), info)
        full = None
        for ids, v in parts:
            if len(ids) == 0:
                continue
            if full is None:
                full = np.zeros((n, *v.shape[1:]), dtype=v.dtype)
            full[np.asarray(ids)] = v
        return full

    def validate(self) -> bool:
        """Score the validation split (centre view); keep the model as ``best/`` when it beats the best so far."""
        out = self.predict("val", views=False)
        metrics = flat_metrics(self.task.score(self.splits["val"], out))
        value = float(metrics.get(self.key, float("nan")))
        better = self.best is None or (math.isfinite(value) and (
            not math.isfinite(self.best["value"]) or (value > self.best["value"] if self.higher
                                                      else value < self.best["value"])))
        self.val_history.append({"epoch": self.epoch + 1, "step": self.step, self.key: value})
        if better:
            self.best = {"value": value, "epoch": self.epoch + 1, "step": self.step,
                         "metrics": {k: float(v) for k, v in metrics.items()}}
            sd = ckpt.gather_module_state(self._eval_module(), self.info.distributed)
            if self.info.is_main:
                write_export(self.out / "best", sd, self.model_meta(), self.encoder_config)
            barrier(self.info)
        return better

    # -- training ---------------------------------------------------------------------------------

    def _step(self, clips: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, dev = self.cfg, self.info.device
        x = to_model_input(clips.to(dev, non_blocking=True), self.mean, self.std, torch.float32)
        split = self.splits["train"]
        targets = torch.stack([self.task.target(split, int(i)) for i in idx]).to(dev)
        draw = MixDraw(1.0)
        if mixes(self.task, cfg):
            rng = np.random.default_rng([cfg.train.seed, self.step, 11])
            draw = draw_mix(rng, x.shape[-2], x.shape[-1], mixup=cfg.train.mixup, cutmix=cfg.train.cutmix,
                            prob=cfg.train.mixup_prob, switch_prob=cfg.train.mixup_switch_prob)
        x = mix_inputs(x, draw)
        with torch.autocast(dev.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            logits = self.model(x)
        loss = finetune_loss(self.task, logits.float(), targets, draw, cfg, self.class_weights)
        loss.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        norm = grad_norm(params, cfg.optim.grad_clip)
        hyper = self.schedules(self.step)
        set_hyperparams(self.optimizer, hyper)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            ema_update_(self.ema, unwrap(self.model), hyper.momentum)
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        return loss.detach(), norm.detach()

    def fit(self) -> FinetuneResult:
        cfg, info = self.cfg, self.info
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
            if self.start_step:
                print(f"resumed at {self.start_step}", flush=True)
        log = RunLogger(self.out, active=info.is_main, total_steps=self.total_steps, start_step=self.start_step,
                        tensorboard=False, progress=cfg.run.progress)
        for n in self.notes:
            log.note(n)
        if cfg.run.dtype == "bf16" and info.device.type != "cuda":
            log.note("run.dtype=bf16 applies on CUDA only; this CPU run computes in fp32")
        t0 = time.perf_counter()
        epoch_losses: list[float] = []
        try:
            while self.step < self.total_steps:
                batches = epoch_batches(len(self.splits["train"]), self.epoch, cfg.train.seed, cfg.train.batch_size)
                r, L = info.rank, self.local_batch
                mine = [b[r * L:(r + 1) * L].tolist() for b in batches[self.batches_done:]]
                self.train_clips.set_epoch(self.epoch)
                loader = DataLoader(_Indexed(self.train_clips), batch_sampler=mine, num_workers=cfg.run.workers,
                                    pin_memory=info.device.type == "cuda",
                                    generator=torch.Generator().manual_seed(cfg.train.seed))
                for clips, idx in loader:
                    loss, norm = self._step(clips, idx)
                    self.step += 1
                    self.batches_done += 1
                    log.advance()
                    if self.step % cfg.run.log_every == 0 or self.batches_done == self.ipe:
                        vec = all_reduce_mean(torch.stack([loss.float(), norm.float()]), info).tolist()
                        hyper = self.schedules(self.step - 1)
                        epoch_losses.append(vec[0])
                        log.log({"step": self.step, "epoch": self.epoch, "loss": vec[0], "grad_norm": vec[1],
                                 "lr": hyper.lr, "wd": hyper.weight_decay, "elapsed_s": time.perf_counter() - t0})
                        if not math.isfinite(vec[0]):
                            raise FloatingPointError(f"loss is {vec[0]} at step {self.step}; lower optim.lr")
                    if cfg.run.checkpoint_every and self.step % cfg.run.checkpoint_every == 0 \
                            and self.batches_done < self.ipe:
                        self.save()
                del loader
                # end of the epoch: validate, maybe keep as best, checkpoint
                if epoch_losses:
                    self.train_loss.append(float(np.mean(epoch_losses)))
                epoch_losses = []
                done = self.epoch + 1
                if done % cfg.train.eval_every == 0 or done == cfg.train.epochs:
                    better = self.validate()
                    if info.is_main:
                        log.log({"step": self.step, "epoch": self.epoch, "val": self.val_history[-1][self.key],
                                 "val_metric": self.key, "best": better})
                self.epoch, self.batches_done = done, 0
                self.save()
        finally:
            log.close()
        run = self.test()
        return FinetuneResult(self.out, run, self.out / "best", self.step, self.start_step)

    # -- test and report --------------------------------------------------------------------------

    def test(self) -> dict | None:
        """The best checkpoint on the test split with every view; metrics with bootstrap CIs into results.json,
        tables and figures (rank 0)."""
        barrier(self.info)
        sd = load_file(str(self.out / "best" / WEIGHTS))
        ckpt.load_module_state(self._eval_module(), sd)
        test = self.splits["test"]
        out = self.predict("test", views=True)
        if not self.info.is_main:
            barrier(self.info)
            return None
        cfg, task, bb = self.cfg, self.task, self.bb
        blocks = task.score(test, out)
        metrics = confidence_intervals(blocks, cfg.report.bootstrap_n, cfg.report.bootstrap_seed)
        per_unit = [r for b in blocks for r in b.rows]
        label = f"{bb.name} ({FINETUNED})"
        selected = {"label": SELECTED_LABEL, "probe_index": 0, "metrics": metrics, "per_unit": per_unit}
        run = {
            "dataset": self.prep.dataset, "split_scheme": self.prep.split_scheme, "task": task.name,
            "class_names": list(self.prep.class_names), "protocol": FINETUNED,
            "backbone": {"spec": bb.spec, "name": bb.name, "label": label, "fingerprint": bb.fingerprint,
                         "embed_dim": bb.embed_dim, "kind": bb.kind},
            "folds": [{"name": self.fold.name, "val_source": self.fold.val_source, "selected": 0,
                       "lr": cfg.optim.lr, "wd": cfg.optim.weight_decay, "best": self.best,
                       "n_samples": {s: len(self.splits[s]) for s in ("train", "val", "test")},
                       "n_units": {s: len(self.splits[s].groups) for s in ("train", "val", "test")}}],
            "selection_metric": self.key, "higher_is_better": self.higher,
            # one model reaches the test split: the same numbers under both of the tables' selections
            "honest": selected, "paper_style": dict(selected),
            "probes": [{"index": 0, "lr": cfg.optim.lr, "wd": cfg.optim.weight_decay,
                        "val": (self.best or {}).get("metrics", {}), "test": flat_metrics(blocks),
                        "train_loss_last_epoch": [self.train_loss[-1] if self.train_loss else float("nan")]}],
            "columns": [dict(key=c.key, label=c.label, percent=c.percent, higher_is_better=c.higher_is_better)
                        for c in task.columns],
            "test_views": {"temporal": 1 if task.per_second else cfg.test.temporal, "spatial": cfg.test.spatial},
            "history": {"val": self.val_history, "train_loss": self.train_loss, "steps": self.step},
            "config": to_dict(cfg), "model_dir": str((self.out / "best").resolve()), "created": time.time(),
        }
        results = load_results(self.out)
        run_dir = self.out / "runs" / slug(self.prep.dataset) / slug(label)
        arrays, items = _figure_payload(self.prep, task, test, out, [], [], cfg, self.info.device)
        run["figure_items"] = items
        run_dir.mkdir(parents=True, exist_ok=True)
        if arrays:
            write_atomic(run_dir / "predictions.npz", lambda f: np.savez_compressed(f, **arrays))
        run["run_dir"] = str(run_dir.relative_to(self.out))
        write_json_atomic(run_dir / "run.json", run)
        results["runs"][f"{self.prep.dataset}/{label}"] = run
        write_json_atomic(self.out / RESULTS_NAME, results)
        write_tables(results, self.out)
        if cfg.report.figures:
            write_figures(results, self.out, self.prep.dataset, max_items=cfg.report.max_figures)
        h = metrics.get(self.key, {})
        self.log(f"test {self.key} = {h.get('value', float('nan')):.4f} (best validation epoch "
                 f"{(self.best or {}).get('epoch')}); model: {self.out / 'best'}")
        barrier(self.info)
        return run


def finetune(backbone: str, dataset: str, root=None, *, config: FinetuneConfig | str | dict | None = None,
             overrides: list[str] | None = None, split_scheme: str | None = None, resume: bool = False,
             strict: bool = True, log: Callable[[str], None] | None = None) -> FinetuneResult:
    """Fine-tune ``backbone`` (a registry spec) on ``dataset`` (see the module docstring)."""
    if isinstance(config, FinetuneConfig):
        if overrides:
            raise ConfigError("pass overrides with a preset name / dict / file, not with a FinetuneConfig object")
        cfg = config
    else:
        cfg = load_finetune_config(config, overrides)
    tuner = Finetuner(backbone, dataset, root, cfg, split_scheme=split_scheme, resume=resume, strict=strict, log=log)
    try:
        return tuner.fit()
    finally:
        shutdown(tuner.info)
