"""The pretraining loop: build everything from a :class:`PretrainConfig`, train, checkpoint, resume.

    from unisurg.train import train, load_pretrain_config
    result = train(load_pretrain_config("tiny", ["data.stores=[store]", "run.out=runs/t"]))

Runs as one process (CPU or one GPU) or under ``torchrun`` (DDP or FSDP2, one process per GPU;
gloo on CPU). Host syncs happen only at log steps (metrics are accumulated on the device) and
checkpoints.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from unisurg.models.ema import make_target
from unisurg.models.mae_decoder import MAEDecoder, MAEDecoderConfig
from unisurg.models.predictor import VideoPredictor
from unisurg.models.strict_load import nonfinite_tensors
from unisurg.models.vit import VideoViT
from unisurg.train import checkpointing as ckpt
from unisurg.train.data import TrainData, build_data
from unisurg.train.distributed import (
    DistInfo,
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
from unisurg.train.divergence import check_loss, check_weights
from unisurg.train.init_weights import initialise
from unisurg.train.leakage_guard import guard_corpus
from unisurg.train.logs import RunLogger
from unisurg.train.optim import Schedules, build_optimizer
from unisurg.train.pretrain_config import PretrainConfig
from unisurg.train.steps import (
    JepaStudent,
    JepaTask,
    MaeStudent,
    MaeTask,
    StepConfig,
    train_step,
)
from unisurg.typed_config import ConfigError, config_differences, to_dict

# config keys a resumed run may change (they do not alter the trajectory; checkpoints hold full,
# unsharded state, so DDP <-> FSDP2 may change too)
RESUME_MAY_CHANGE = {
    "run.strategy",
    "run.out", "run.log_every", "run.checkpoint_every", "run.keep_last", "run.tensorboard", "run.progress",
    "run.threads", "run.export", "run.compile", "data.workers", "data.prefetch_factor", "data.pin_memory",
    "data.stores", "schedule.max_steps",
}


@dataclass
class TrainResult:
    out: Path
    start_step: int
    steps: int  # steps done at the end (global)
    total_steps: int  # epochs x iterations per epoch
    iterations_per_epoch: int
    last_checkpoint: Path | None
    export: Path | None
    history: list[dict] = field(default_factory=list)  # the logged records of this process (rank 0)




@dataclass
class Models:
    student: torch.nn.Module  # wrapped (DDP) or sharded (FSDP2) JepaStudent / MaeStudent
    target: torch.nn.Module | None
    encoder_config: object
    predictor_config: object | None
    decoder_config: MAEDecoderConfig | None
    task: object
    notes: list[str]


def build_models(cfg: PretrainConfig, info: DistInfo, *, load_init: bool) -> Models:
    """Encoder, predictor or MAE decoder, EMA target; initial weights; device placement; DDP / FSDP2."""
    m = cfg.model
    encoder = VideoViT(m.encoder)
    predictor = decoder = None
    if cfg.loss.objective == "mae":
        decoder = MAEDecoder(m.decoder)
    else:
        predictor = VideoPredictor(m.predictor)
    notes: list[str] = []
    target_sd = None
    if load_init and cfg.init.checkpoint:
        target_sd, notes = initialise(cfg.init, encoder, predictor=predictor, decoder=decoder)
    student = MaeStudent(encoder, decoder) if decoder is not None else JepaStudent(encoder, predictor)
    student.to(info.device)
    if cfg.run.compile:
        for part in (student.encoder, predictor, decoder):
            if part is not None:
                part.compile()

    strategy = cfg.run.strategy if info.distributed else "single"
    target = None
    if decoder is None and strategy == "fsdp":
        target = make_target(encoder)  # copy before sharding, then shard it like the encoder (same layout)
    if strategy == "ddp":
        student = wrap_ddp(student, info)  # broadcasts rank 0's weights, which the target copies below
    elif strategy == "fsdp":
        blocks = [encoder.blocks] + ([predictor.predictor_blocks] if predictor is not None else [decoder.blocks])
        shard_fsdp(student, blocks, info)
        if target is not None:
            shard_fsdp(target, [target.blocks], info, reshard_root=True)
    if decoder is None:
        if target is None:
            target = make_target(encoder)  # the EMA encoder: no gradient, so no DDP wrapper needed
        if target_sd is not None:
            ckpt.load_module_state(target, target_sd)
        if cfg.run.compile:
            target.compile()
    tubelet = (m.encoder.tubelet_size, m.encoder.patch_size, m.encoder.patch_size)
    inner = unwrap(student)
    if decoder is None:
        task = JepaTask(student, target, cfg.loss.unisurg(), tubelet, online_encoder=inner.encoder)
    else:
        task = MaeTask(student, tubelet, norm_pix=cfg.loss.norm_pix)
    return Models(student, target, encoder.config, predictor.config if predictor is not None else None,
                  decoder.config if decoder is not None else None, task, notes)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def _gather_contents(models: Models, optimizer, info: DistInfo, train_state: dict) -> ckpt.CheckpointContents | None:
    """Collective: full state dicts to rank 0 (None elsewhere), with every rank's RNG state."""
    student_sd, optim_sd = ckpt.gather_student_state(models.student, optimizer, info.distributed)
    target_sd = ckpt.gather_module_state(models.target, info.distributed) if models.target is not None else None
    rngs = all_gather_object(ckpt.rng_state(), info)
    if not info.is_main:
        return None
    state = {**train_state, "optimizer": optim_sd, "rng": rngs, "format": ckpt.STATE_FORMAT, "world": info.world}
    return ckpt.CheckpointContents(student_sd, target_sd, models.encoder_config, models.predictor_config,
                                   models.decoder_config, state)


class Trainer:
    """Holds the built run; :meth:`fit` trains. ``train(cfg)`` is the one-call entry point."""

    def __init__(self, cfg: PretrainConfig, *, resume: bool = False):
        self.cfg = cfg
        self.info = init_distributed(cfg.run.device)
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        self.out = Path(cfg.run.out)
        self.checkpoints = self.out / "checkpoints"
        self.resume_notes: list[str] = []  # damaged checkpoints passed over (repeated in the run's summary)
        self.resume_checked = False  # this process verified the resume checkpoint's checksums already
        self.resume_from = self._find_resume(resume)
        _seed_everything(cfg.run.seed)
        self.data: TrainData = build_data(cfg, self.info)
        self.corpus_check = self._guard_corpus()
        self.ipe = self.data.iterations_per_epoch
        self.total_steps = cfg.schedule.epochs * self.ipe
        self.end_step = min(self.total_steps, cfg.schedule.max_steps or self.total_steps)
        self.models = build_models(cfg, self.info, load_init=self.resume_from is None)
        if self.info.rank:  # weights are equal on every rank; stochastic depth should differ between ranks
            torch.manual_seed(cfg.run.seed + 1_000_003 * self.info.rank)
        self.optimizer = build_optimizer(self.models.student, cfg.optim, self.info.device)
        self.schedules = Schedules(cfg.optim, cfg.ema, self.total_steps, self.ipe)
        dtype = torch.bfloat16 if cfg.run.dtype == "bf16" and self.info.device.type == "cuda" else None
        self.step_cfg = StepConfig(self.info.device, dtype, cfg.optim.grad_clip)
        if self.info.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        # the loader's own generator: creating an iterator must not draw from the global RNG stream
        self.data.loader.generator = torch.Generator().manual_seed(cfg.run.seed)
        self.start_step, self.start_epoch, self.start_batch = 0, 0, 0
        if self.resume_from is not None:
            self._restore(self.resume_from)
        self.last_checkpoint: Path | None = self.resume_from

    # -- setup helpers ---------------------------------------------------------------------------

    def _guard_corpus(self) -> dict | None:
        """Refuse a corpus with known benchmark-test leakage (unless run.allow_leakage); the record
        of the check goes to OUT/corpus_check.json and the console."""
        if not self.info.is_main:
            return None

        record = guard_corpus(self.cfg.data.stores, allow_leakage=self.cfg.run.allow_leakage,
                              log=lambda m: print(f"[pretrain] {m}", file=sys.stderr, flush=True),
                              videos=self.data.video_ids)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "corpus_check.json").write_text(json.dumps(record, indent=1, default=str))
        return record

    def _find_resume(self, resume: bool) -> Path | None:
        found = None
        if self.info.is_main:
            ckpt.clean_temporaries(self.checkpoints)
            ckpt.clean_temporaries(self.out)  # an interrupted export of <out>/final, a log rewrite
            found = ckpt.latest_checkpoint(self.checkpoints)
            if found is not None and resume:
                found = ckpt.newest_intact_checkpoint(self.checkpoints, self._warn)
                self.resume_checked = True
        found = broadcast_object(found, self.info)
        if found is not None and not resume:
            raise ConfigError(f"run.out={self.out} already holds a run (checkpoint {found.name}); pass --resume to "
                              "continue it, or choose another run.out")
        return found

    def _warn(self, text: str) -> None:
        """Loud on the console at once, and kept for the run's notes."""
        print(f"[pretrain] WARNING: {text}", file=sys.stderr, flush=True)
        self.resume_notes.append(text)

    def _restore(self, path: Path) -> None:
        student_sd, target_sd, state = ckpt.read_checkpoint(path, verify=not self.resume_checked)
        diffs = config_differences(state["config"], to_dict(self.cfg), RESUME_MAY_CHANGE, ignore_prefixes=("init.",))
        if diffs:
            raise ConfigError(f"--resume: the config differs from the one {path} was trained with:\n  "
                              + "\n  ".join(diffs)
                              + "\n  resume with the same settings, or start a new run (another run.out) with "
                                "init.checkpoint pointing at this one")
        if state["world"] != self.info.world:
            raise ConfigError(f"--resume: {path} was written by {state['world']} processes, this run has "
                              f"{self.info.world}; an exact resume needs the same number (the sampler splits the "
                              "epoch by rank)")
        ckpt.load_student_state(self.models.student, self.optimizer, student_sd, state["optimizer"])
        if self.models.target is not None:
            ckpt.load_module_state(self.models.target, target_sd)
        self.data.sampler.load_state_dict(state["sampler"])
        self.start_step = int(state["step"])
        self.start_epoch = int(state["epoch"])
        self.start_batch = int(state["batches_done"])
        ckpt.set_rng_state(state["rng"][self.info.rank])

    # -- checkpoints ---------------------------------------------------------------------------------

    def _train_state(self, step: int, epoch: int, batches_done: int) -> dict:
        return {"step": step, "epoch": epoch, "batches_done": batches_done, "sampler": self.data.sampler.state_dict(),
                "config": to_dict(self.cfg), "total_steps": self.total_steps}

    def save(self, step: int, epoch: int, batches_done: int, *, export: bool = False) -> Path | None:
        contents = _gather_contents(self.models, self.optimizer, self.info,
                                    self._train_state(step, epoch, batches_done))
        path = exported = None
        bad = []
        if self.info.is_main:
            target = {f"target_encoder.{k}": v for k, v in (contents.target or {}).items()}
            bad = nonfinite_tensors({**contents.student, **target})
        check_weights(broadcast_object(bad, self.info), step, self.last_checkpoint)
        if self.info.is_main:
            path = ckpt.write_checkpoint(self.checkpoints, step, contents, self.cfg.run.keep_last)
            if export:
                exported = ckpt.export_model(self.out / "final", contents)
        barrier(self.info)
        self.last_checkpoint = path
        return exported

    # -- the loop ------------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        cfg, info = self.cfg, self.info
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        log = RunLogger(self.out, active=info.is_main, total_steps=self.end_step, start_step=self.start_step,
                        tensorboard=cfg.run.tensorboard, progress=cfg.run.progress)
        for n in self.models.notes:
            log.note(n)
        log.notes.extend(self.resume_notes)  # printed loudly already; repeated in the closing summary
        if cfg.run.dtype == "bf16" and info.device.type != "cuda":
            log.note("run.dtype=bf16 applies on CUDA only; this CPU run computes in fp32")
        if cfg.run.strategy == "fsdp" and not info.distributed:
            log.note("run.strategy=fsdp needs several processes (torchrun); one process runs unsharded")
        names = self.models.task.metric_names
        step, epoch, batches_done = self.start_step, self.start_epoch, self.start_batch
        acc = None
        win_steps, win_data, win_t0 = 0, 0.0, time.perf_counter()
        t_start = time.perf_counter()
        exported = None
        try:
            while step < self.end_step:
                if batches_done >= self.ipe:
                    epoch, batches_done = epoch + 1, 0
                    continue
                self.data.start_epoch(epoch, batches_done)
                batches = iter(self.data.loader)
                while batches_done < self.ipe and step < self.end_step:
                    t0 = time.perf_counter()
                    clips, masks = next(batches)
                    win_data += time.perf_counter() - t0
                    log_now = (step + 1) % cfg.run.log_every == 0 or step + 1 == self.end_step
                    hyper = self.schedules(step)
                    vec = train_step(self.models.task, self.optimizer, clips, masks, hyper, self.step_cfg,
                                     want_norm=log_now)
                    acc = vec[:-1] if acc is None else acc + vec[:-1]
                    self.data.sampler.advance(self.data.per_rank_batch)
                    step, batches_done, win_steps = step + 1, batches_done + 1, win_steps + 1
                    log.advance()
                    if log_now:
                        self._log(log, names, acc / win_steps, vec[-1], hyper, step, epoch, win_steps, win_data,
                                  time.perf_counter() - win_t0, time.perf_counter() - t_start)
                        acc, win_steps, win_data, win_t0 = None, 0, 0.0, time.perf_counter()
                    if cfg.run.checkpoint_every and step % cfg.run.checkpoint_every == 0 and step < self.end_step:
                        t_save = time.perf_counter()
                        self.save(step, epoch, batches_done)
                        win_t0 += time.perf_counter() - t_save  # throughput counts training time only
                del batches
            exported = self.save(step, epoch, batches_done, export=cfg.run.export)
        finally:
            log.close()
        result = TrainResult(self.out, self.start_step, step, self.total_steps, self.ipe, self.last_checkpoint,
                             exported, list(log.history))
        if info.is_main:
            print(log.summary(steps_done=step, total_steps=self.total_steps, start_step=self.start_step,
                              checkpoint=self.last_checkpoint, export=exported), flush=True)
        return result

    def _log(self, log: RunLogger, names, mean_vec, norm, hyper, step, epoch, n, data_s, window_s, elapsed) -> None:
        """One host sync: the window's mean metrics (averaged over ranks) to JSONL / TensorBoard."""
        vec = torch.cat([mean_vec, norm.reshape(1)])
        vec = all_reduce_mean(vec, self.info)
        values = vec.tolist()
        rec = {"step": step, "epoch": epoch}
        rec.update(dict(zip(names, values[:-1])))
        rec["grad_norm"] = values[-1]
        rec.update(lr=hyper.lr, wd=hyper.weight_decay)
        if self.models.target is not None:
            rec["ema_momentum"] = hyper.momentum
        rec.update(clips_per_s=n * self.cfg.schedule.global_batch_size / max(window_s, 1e-9),
                   step_time_s=window_s / n, data_wait_s=data_s / n, elapsed_s=elapsed)
        if self.info.device.type == "cuda":
            rec["max_mem_gb"] = torch.cuda.max_memory_allocated(self.info.device) / 2 ** 30
        log.log(rec)
        check_loss(rec["loss"], step, self.last_checkpoint)


def train(cfg: PretrainConfig, *, resume: bool = False) -> TrainResult:
    """Build and run a pretraining run from ``cfg`` (see module docstring); returns its :class:`TrainResult`."""
    trainer = Trainer(cfg, resume=resume)
    try:
        return trainer.fit()
    finally:
        shutdown(trainer.info)


def print_config(cfg: PretrainConfig, file=sys.stdout) -> None:
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False), file=file, end="")


__all__ = ["Trainer", "TrainResult", "train", "build_models", "print_config"]
