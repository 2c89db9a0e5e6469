"""Figures of a benchmark output folder (matplotlib, Agg backend, PNG):

* phase ribbons per test video (the papers' Figure 2): ground truth on top, then each backbone's
  per-second predictions, one colour per phase, unlabelled seconds light grey, a legend;
* segmentation overlays: image, ground truth, each backbone's predicted mask (red overlay);
* depth maps: image, ground-truth depth, each backbone's depth, one shared colour scale (mm);
* probe training curves: mean training loss per epoch of every probe.

All backbones of a dataset in ``results.json`` appear in one figure (the merge of runs).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from unisurg.datasets import read_depth_mm, read_image, read_mask

UNLABELLED = (0.88, 0.88, 0.88)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def phase_colors(n: int) -> np.ndarray:
    """``[n, 3]`` distinct RGB colours (tab10, tab20, then hsv beyond 20 phases)."""
    plt = _plt()
    if n <= 10:
        cmap = plt.get_cmap("tab10")
        return np.array([cmap(i)[:3] for i in range(n)])
    if n <= 20:
        cmap = plt.get_cmap("tab20")
        return np.array([cmap(i)[:3] for i in range(n)])
    cmap = plt.get_cmap("hsv")
    return np.array([cmap(i / n)[:3] for i in range(n)])


def ribbon_image(labels: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """``[1, n, 3]`` RGB strip of per-second labels (``-1`` = unlabelled, grey)."""
    lab = np.asarray(labels, dtype=np.int64)
    img = np.empty((1, lab.size, 3))
    img[0] = UNLABELLED
    ok = lab >= 0
    img[0, ok] = colors[lab[ok]]
    return img


def plot_ribbons(path: Path, video: str, gt: np.ndarray | None, preds: list[tuple[str, np.ndarray]],
                 class_names: list[str]) -> Path:
    """One ribbon figure: ground truth (if given) above each ``(label, per-second prediction)``; a
    prediction row is labelled with its accuracy on the labelled seconds."""
    plt = _plt()
    from matplotlib.patches import Patch

    colors = phase_colors(len(class_names))
    rows = ([("Ground truth", gt)] if gt is not None else []) + list(preds)
    fig_h = 0.45 * len(rows) + 1.3
    fig, axes = plt.subplots(len(rows), 1, figsize=(10, fig_h), squeeze=False)
    for ax, (name, lab) in zip(axes[:, 0], rows):
        ax.imshow(ribbon_image(lab, colors), aspect="auto", interpolation="nearest", extent=(0, len(lab), 0, 1))
        label = name
        if gt is not None and name != "Ground truth":
            ok = gt >= 0
            acc = float(np.mean(lab[ok] == gt[ok])) if ok.any() else float("nan")
            label = f"{name} ({100 * acc:.1f}%)"
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        ax.set_xticks([])
    axes[-1, 0].set_xticks(np.linspace(0, len(rows[0][1]), 6).round())
    axes[-1, 0].set_xlabel("time (s)")
    handles = [Patch(color=colors[i], label=n) for i, n in enumerate(class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(class_names), 5), fontsize=7, frameon=False)
    fig.suptitle(video, fontsize=10)
    fig.tight_layout(rect=(0, 0.12 + 0.02 * (len(class_names) // 5), 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _load_predictions(out: Path, run: dict) -> dict[str, np.ndarray]:
    path = out / run.get("run_dir", "") / "predictions.npz"
    if not run.get("run_dir") or not path.exists():
        return {}
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "x"


def write_phase_ribbons(results: dict, out: Path, dataset: str, max_items: int = 12) -> list[Path]:
    runs = [r for r in results["runs"].values() if r["dataset"] == dataset and r["task"] == "phase"]
    if not runs:
        return []
    preds = [(r["backbone"].get("label", r["backbone"]["name"]), _load_predictions(out, r)) for r in runs]
    gt_src = next((p for _, p in preds if p), {})
    videos = sorted(k.split("/", 1)[1] for k in gt_src if k.startswith("gt/"))[:max_items]
    paths = []
    for v in videos:
        rows = [(name, p[f"pred/{v}"]) for name, p in preds if f"pred/{v}" in p]
        paths.append(plot_ribbons(out / "figures" / _safe(dataset) / f"ribbon_{_safe(v)}.png", v, gt_src[f"gt/{v}"],
                                  rows, runs[0]["class_names"]))
    return paths


def write_dense_figures(results: dict, out: Path, dataset: str, max_items: int = 12) -> list[Path]:
    runs = [r for r in results["runs"].values() if r["dataset"] == dataset and r["task"] in ("segmentation", "depth")]
    if not runs:
        return []
    plt = _plt()
    task = runs[0]["task"]
    preds = [(r["backbone"].get("label", r["backbone"]["name"]), _load_predictions(out, r)) for r in runs]
    items = runs[0].get("figure_items", [])[:max_items]
    paths = []
    for it in items:
        img = read_image(it["image"])
        gt = read_mask(it["target"]).astype(np.float32) if task == "segmentation" else read_depth_mm(it["target"])
        maps = [(n, p[f"pred/{it['id']}"]) for n, p in preds if f"pred/{it['id']}" in p]
        cols = 2 + len(maps)
        fig, axes = plt.subplots(1, cols, figsize=(2.6 * cols, 2.8), squeeze=False)
        axes = axes[0]
        axes[0].imshow(img)
        axes[0].set_title(it["id"] if not it.get("subset") else f"{it['subset']}", fontsize=8)
        if task == "segmentation":
            for ax, (name, m) in zip(axes[1:], [("Ground truth", gt)] + maps):
                ax.imshow(img)
                overlay = np.zeros(m.shape + (4,))
                overlay[..., 0] = 1.0
                overlay[..., 3] = 0.45 * (np.asarray(m, dtype=np.float32) > 0.5)
                ax.imshow(overlay)
                ax.set_title(name, fontsize=8)
        else:
            valid = gt[gt > 0]
            vmin, vmax = (float(valid.min()), float(valid.max())) if valid.size else (0.0, 100.0)
            im = None
            for ax, (name, m) in zip(axes[1:], [("Ground truth", gt)] + maps):
                im = ax.imshow(np.asarray(m, dtype=np.float32), cmap="turbo_r", vmin=vmin, vmax=vmax)
                ax.set_title(name, fontsize=8)
            fig.colorbar(im, ax=list(axes), fraction=0.02, label="depth (mm)")
        for ax in axes:
            ax.axis("off")
        path = out / "figures" / _safe(dataset) / f"{'seg' if task == 'segmentation' else 'depth'}_{_safe(it['id'])}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def write_training_curves(results: dict, out: Path, dataset: str) -> list[Path]:
    """Per run: the last-epoch training loss of each probe against its (lr, wd)."""
    plt = _plt()
    paths = []
    for run in results["runs"].values():
        if run["dataset"] != dataset or not run.get("run_dir"):
            continue
        probes = run["probes"]
        fig, ax = plt.subplots(figsize=(5, 3))
        lrs = sorted({p["lr"] for p in probes})
        for wd in sorted({p["wd"] for p in probes}):
            pts = sorted((p["lr"], float(np.mean(p["train_loss_last_epoch"]))) for p in probes if p["wd"] == wd)
            ax.plot([a for a, _ in pts], [b for _, b in pts], marker="o", label=f"wd {wd:g}")
        ax.set_xscale("log")
        ax.set_xticks(lrs)
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss (last epoch)")
        ax.set_title(run["backbone"].get("label", run["backbone"]["name"]), fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / "figures" / _safe(dataset) / f"probes_{_safe(run['backbone'].get('label', run['backbone']['name']))}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_figures(results: dict, out: Path, dataset: str, max_items: int = 12) -> list[Path]:
    out = Path(out)
    return (write_phase_ribbons(results, out, dataset, max_items) + write_dense_figures(results, out, dataset, max_items)
            + write_training_curves(results, out, dataset))
