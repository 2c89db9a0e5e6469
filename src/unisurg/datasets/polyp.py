"""Polyp segmentation: Kvasir-SEG, CVC-ClinicDB, CVC-300, CVC-ColonDB, ETIS-LaribPolypDB.

Two distributed layouts are read:

* PraNet's (Fan et al., MICCAI 2020)::

      ROOT/TrainDataset/{image,mask}/*.png             900 Kvasir (hash names) + 550 ClinicDB (numbers)
      ROOT/TestDataset/<name>/{images,masks}/*.png     Kvasir 100, CVC-ClinicDB 62, CVC-300 60,
                                                       CVC-ColonDB 380, ETIS-LaribPolypDB 196

* raw Kvasir-SEG::

      ROOT/images/*.jpg, ROOT/masks/*.jpg               masks are lossy JPEG: threshold at 128

Masks are read with :func:`unisurg.data.image_files.read_mask`.
"""

from __future__ import annotations

from pathlib import Path

from unisurg.datasets.base import (
    DatasetAdapter,
    DatasetLayoutError,
    SegSample,
    empty_splits,
    register,
)
from unisurg.datasets.splitfiles import (
    carve,
    fraction_split,
    load_split_file,
    stable_rank_key,
)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _sub(folder: Path, *names: str) -> Path | None:
    for n in names:
        if (folder / n).is_dir():
            return folder / n
    return None


def pair_images_masks(image_dir: Path, mask_dir: Path) -> list[tuple[str, Path, Path]]:
    """``[(stem, image, mask)]`` matched by file stem; an image without mask (or the reverse) is an error."""
    def index(d: Path) -> dict[str, Path]:
        out = {}
        for p in sorted(d.iterdir()):
            if p.is_file() and p.suffix.lower() in IMAGE_EXTS:
                if p.stem in out:
                    raise DatasetLayoutError(f"two files with stem {p.stem!r} in {d}: {out[p.stem].name}, {p.name}")
                out[p.stem] = p
        return out

    images, masks = index(image_dir), index(mask_dir)
    lonely = sorted(set(images) ^ set(masks))
    if lonely:
        raise DatasetLayoutError(
            f"images and masks do not pair by name in {image_dir} / {mask_dir}: {', '.join(lonely[:5])}"
            + (f" ... ({len(lonely)} in all)" if len(lonely) > 5 else "")
        )
    return [(s, images[s], masks[s]) for s in sorted(images)]


def pranet_train_source(stem: str) -> str:
    """PraNet's training images are Kvasir (hash-like names) or CVC-ClinicDB (numbered)."""
    return "CVC-ClinicDB" if stem.isdigit() else "Kvasir"


@register("polyp")
class PolypSegmentationAdapter(DatasetAdapter):
    """Polyp segmentation sets.

    Split schemes: ``pranet_v1`` (default; PraNet train minus a 10% per-source validation carve,
    PraNet test sets), ``pranet_no_val`` (as distributed) and ``kvasir_raw_v1`` (raw Kvasir-SEG,
    80/10/10 by SHA-1 rank of the file stem).
    """

    task = "segmentation"
    class_names = ("background", "polyp")
    default_split_scheme = "pranet_v1"
    split_schemes = ("pranet_v1", "pranet_no_val", "kvasir_raw_v1")

    def load(self) -> dict[str, list[SegSample]]:
        sf = load_split_file("polyp.json")
        if self.split_scheme == "kvasir_raw_v1":
            return self._load_raw(sf)
        return self._load_pranet(sf)

    def _load_raw(self, sf) -> dict[str, list[SegSample]]:
        img, msk = self.root / "images", self.root / "masks"
        if not (img.is_dir() and msk.is_dir()):
            raise DatasetLayoutError(f"PolypSegmentationAdapter: scheme kvasir_raw_v1 needs {img} and {msk} (raw Kvasir-SEG layout)")
        pairs = sorted(pair_images_masks(img, msk), key=lambda x: stable_rank_key(x[0]))
        fr = sf["kvasir_raw_fractions"]
        _, n_val, n_test = fraction_split(len(pairs), (fr["train"], fr["val"], fr["test"]))
        out = empty_splits()
        for k, (stem, i, m) in enumerate(pairs):
            split = "val" if k < n_val else ("test" if k < n_val + n_test else "train")
            out[split].append(SegSample(stem, i, m, split, "Kvasir"))
        for s in out:
            out[s].sort(key=lambda x: x.sample_id)
        return out

    def _load_pranet(self, sf) -> dict[str, list[SegSample]]:
        train_dir, test_dir = self.root / "TrainDataset", self.root / "TestDataset"
        if not train_dir.is_dir() and not test_dir.is_dir():
            raise DatasetLayoutError(
                f"PolypSegmentationAdapter: {self.root} has neither TrainDataset/ nor TestDataset/ (PraNet layout); "
                "for the raw Kvasir-SEG layout (images/, masks/) use split_scheme='kvasir_raw_v1'"
            )
        out = empty_splits()
        problems = []
        if train_dir.is_dir():
            img, msk = _sub(train_dir, "image", "images"), _sub(train_dir, "mask", "masks")
            if img is None or msk is None:
                raise DatasetLayoutError(f"PolypSegmentationAdapter: {train_dir} needs image/ and mask/ folders")
            train = [SegSample(s, i, m, "train", pranet_train_source(s)) for s, i, m in pair_images_masks(img, msk)]
            for src, want in sf["pranet_train_counts"].items():
                got = sum(t.source_dataset == src for t in train)
                if got != want:
                    problems.append(f"TrainDataset has {got} {src} images, PraNet's has {want}")
            if self.split_scheme == "pranet_v1":
                train, held = carve(train, sf["pranet_val_fraction"], key=lambda t: t.sample_id, group=lambda t: t.source_dataset)
                out["val"] = [SegSample(t.sample_id, t.image, t.mask, "val", t.source_dataset) for t in held]
            out["train"] = train
        else:
            problems.append(f"{train_dir} missing")
        for name, want in sf["pranet_test_counts"].items():
            d = test_dir / name
            if not d.is_dir():
                problems.append(f"{d} missing")
                continue
            img, msk = _sub(d, "images", "image"), _sub(d, "masks", "mask")
            if img is None or msk is None:
                raise DatasetLayoutError(f"PolypSegmentationAdapter: {d} needs images/ and masks/ folders")
            samples = [SegSample(f"{name}/{s}", i, m, "test", name) for s, i, m in pair_images_masks(img, msk)]
            if len(samples) != want:
                problems.append(f"TestDataset/{name} has {len(samples)} images, PraNet's has {want}")
            out["test"].extend(samples)
        if problems and self.strict:
            raise DatasetLayoutError("PolypSegmentationAdapter: not the PraNet release: " + "; ".join(problems)
                                     + ". Pass strict=False to load it anyway.")
        return out
