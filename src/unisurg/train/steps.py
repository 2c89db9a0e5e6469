"""One training step, phase by phase (:func:`train_step`), and the two kinds of pretraining task.

A *student* is the module that gets gradients (wrapped whole by DDP or FSDP2, so it has a
``forward``); a *task* owns the student, the optional EMA target and the loss:

    targets = task.targets(x, masks)                 # EMA encoder on the full clip / pixel targets
    preds = task.student(x, masks)                   # context encoder + predictor (or MAE decoder)
    metrics = task.losses(x, preds, targets, masks)  # dict of 0-dim tensors, "loss" differentiable
    task.after_optimizer_step(momentum)              # EMA update (JEPA) / nothing (MAE)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unisurg.data.clips import IMAGENET_MEAN, IMAGENET_STD
from unisurg.models.ema import ema_update_
from unisurg.models.mae_decoder import MAEDecoder
from unisurg.models.predictor import VideoPredictor
from unisurg.models.vit import VideoViT, gather_tokens
from unisurg.objectives.mae import mae_loss, mae_targets
from unisurg.objectives.unisurg_loss import UniSurgLossConfig, unisurg_loss
from unisurg.train.masks import MaskBatch
from unisurg.train.optim import StepHyperparams, grad_norm, set_hyperparams
from unisurg.train.packed_context import encode_context_sets

JEPA_METRICS = ("loss", "l_pred", "l_st", "l_var", "l1", "pred_std", "target_std")
MAE_METRICS = ("loss", "l_rec")


class JepaStudent(nn.Module):
    """Context encoder + predictor: ``forward(x, masks) -> [predicted latents per mask family]``."""

    def __init__(self, encoder: VideoViT, predictor: VideoPredictor):
        super().__init__()
        self.encoder = encoder
        self.predictor = predictor

    def forward(self, x: torch.Tensor, masks: list[MaskBatch]) -> list[torch.Tensor]:
        grid = self.encoder.grid(x.shape)
        zs = encode_context_sets(self.encoder, x, masks)  # mask families packed into one encoder pass
        return [self.predictor(z, grid=grid, mask_index=family, **m.predictor_kwargs())
                for family, (z, m) in enumerate(zip(zs, masks))]


class MaeStudent(nn.Module):
    """Encoder on the visible tokens + pixel decoder: ``forward(x, masks) -> [pixels of masked tokens]``."""

    def __init__(self, encoder: VideoViT, decoder: MAEDecoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, x: torch.Tensor, masks: list[MaskBatch]) -> list[torch.Tensor]:
        grid = self.encoder.grid(x.shape)
        zs = encode_context_sets(self.encoder, x, masks)  # mask families packed into one encoder pass
        return [self.decoder(z, grid=grid, **m.predictor_kwargs()) for z, m in zip(zs, masks)]


def target_latents(target: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """V-JEPA target: the EMA encoder on the full clip, layer-normed without affine, no gradient."""
    with torch.no_grad():
        h = target(x)
        return F.layer_norm(h, (h.shape[-1],))


def _mean_dicts(dicts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    if len(dicts) == 1:
        return dicts[0]
    return {k: sum(d[k] for d in dicts) / len(dicts) for k in dicts[0]}


class JepaTask:
    """UniSurg (or plain V-JEPA) latent prediction with an EMA target encoder."""

    metric_names = JEPA_METRICS

    def __init__(self, student: nn.Module, target: nn.Module, loss_cfg: UniSurgLossConfig,
                 tubelet: tuple[int, int, int], online_encoder: nn.Module):
        self.student = student  # possibly DDP / FSDP wrapped JepaStudent
        self.target = target
        self.loss_cfg = loss_cfg
        self.tubelet = tubelet
        self.online_encoder = online_encoder  # the student's encoder (unwrapped), source of the EMA

    def targets(self, x: torch.Tensor, masks: list[MaskBatch]) -> torch.Tensor:
        """Layer-normed EMA latents of every token of the full clip ``[B, N, D]`` (no gradient)."""
        return target_latents(self.target, x)

    def losses(self, x: torch.Tensor, preds: list[torch.Tensor], targets: torch.Tensor,
               masks: list[MaskBatch]) -> dict[str, torch.Tensor]:
        # one loss per mask family on the same target, averaged (V-JEPA 2)
        return _mean_dicts([unisurg_loss(x, p, gather_tokens(targets, m.target_idx), m, self.loss_cfg, self.tubelet)
                            for p, m in zip(preds, masks)])

    def after_optimizer_step(self, momentum: float) -> None:
        ema_update_(self.target, self.online_encoder, momentum)


class MaeTask:
    """SurgRec-MAE: reconstruction of the masked tubelets' (normalised) pixels."""

    metric_names = MAE_METRICS

    def __init__(self, student: nn.Module, tubelet: tuple[int, int, int], norm_pix: bool = True):
        self.student = student
        self.target = None
        self.tubelet = tubelet
        self.norm_pix = norm_pix

    def targets(self, x: torch.Tensor, masks: list[MaskBatch]) -> torch.Tensor:
        """Every tubelet's pixels ``[B, N, t*p*p*C]``, each patch normalised by its own mean and std."""
        return mae_targets(x, self.tubelet, norm_pix=self.norm_pix)

    def losses(self, x: torch.Tensor, preds: list[torch.Tensor], targets: torch.Tensor,
               masks: list[MaskBatch]) -> dict[str, torch.Tensor]:
        outs = []
        for p, m in zip(preds, masks):
            l_rec = mae_loss(p, targets, m.target_idx, m.target_valid)
            outs.append({"loss": l_rec, "l_rec": l_rec.detach()})
        return _mean_dicts(outs)

    def after_optimizer_step(self, momentum: float) -> None:
        pass


def forward_losses(task, x: torch.Tensor, masks: list[MaskBatch]) -> dict[str, torch.Tensor]:
    """Phases 2-4 of :func:`train_step` (targets, prediction, losses) without an update: tests, benchmarks."""
    targets = task.targets(x, masks)
    return task.losses(x, task.student(x, masks), targets, masks)


@dataclass
class StepConfig:
    device: torch.device
    autocast_dtype: torch.dtype | None  # bf16 on CUDA, None: fp32
    grad_clip: float


def metric_vector(metrics: dict[str, torch.Tensor], names: tuple[str, ...], norm: torch.Tensor | None) -> torch.Tensor:
    """The step's metrics as one fp32 device vector (names order, then the grad norm; NaN if not computed)."""
    vals = [metrics[k].detach().float().reshape(()) for k in names]
    if norm is None:
        norm = torch.full((), float("nan"), device=vals[0].device)
    elif hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    vals.append(norm.detach().float().reshape(()))
    return torch.stack(vals)


_NORM_CONSTANTS: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def normalize_on_device(x: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, C, T, H, W]`` (any strides, e.g. channels-last clips) -> contiguous ImageNet-normalised
    float32, as :func:`unisurg.data.clips.normalize_batch` (same arithmetic, ``(x - 255 mean) / (255 std)``)
    but with the constants cached per device: creating
    them from Python lists every step would be a host-to-device copy, which synchronises a CUDA stream."""
    consts = _NORM_CONSTANTS.get(x.device)
    if consts is None:
        m = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1, 1) * 255.0
        s = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1, 1) * 255.0
        consts = _NORM_CONSTANTS[x.device] = (m.to(x.device), s.to(x.device))
    out = torch.empty(x.shape, device=x.device, dtype=torch.float32)  # contiguous, whatever x's strides
    torch.sub(x, consts[0], out=out)
    return out.div_(consts[1])


def train_step(task, optimizer: torch.optim.Optimizer, clips_uint8: torch.Tensor, masks: list[MaskBatch],
               hyper: StepHyperparams, cfg: StepConfig, *, want_norm: bool = False) -> torch.Tensor:
    """One optimisation step; returns the metric vector (a device tensor: no host sync here)."""
    # 1. inputs: uint8 clips normalised on the device, masks moved along
    x = normalize_on_device(clips_uint8.to(cfg.device, non_blocking=True))
    masks = [m.to(cfg.device, non_blocking=True) for m in masks]
    with torch.autocast(cfg.device.type, dtype=cfg.autocast_dtype or torch.float32,
                        enabled=cfg.autocast_dtype is not None):
        # 2. target forward: the EMA encoder on the full clip, no gradient (MAE: the clip's pixels)
        targets = task.targets(x, masks)
        # 3. context encoder on the visible tokens, predictor at the masked positions
        preds = task.student(x, masks)
        # 4. losses: L_motion + lambda_st L_st + lambda_var L_var (or the plain L1, or the MAE loss)
        metrics = task.losses(x, preds, targets, masks)
    # 5. backward, gradient clipping, AdamW with this step's learning rate and weight decay
    metrics["loss"].backward()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    norm = grad_norm(params, cfg.grad_clip) if (cfg.grad_clip > 0 or want_norm) else None
    set_hyperparams(optimizer, hyper)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    # 6. EMA: the target encoder moves towards the context encoder with this step's momentum
    task.after_optimizer_step(hyper.momentum)
    return metric_vector(metrics, task.metric_names, norm)
