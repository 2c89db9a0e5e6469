"""Fault injection: damaged checkpoints, a stray latest.json, unreadable weight files, NaN weights.

Each test damages files the way a full disk, a killed copy or bad storage does (cut, zeroed, one
byte flipped) and checks that the damage is named and, on resume, the newest intact checkpoint
is used and the run follows the uninterrupted trajectory from there.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import synth_store
from safetensors.torch import load_file, save_file

from unisurg.backbones.registry import load_backbone
from unisurg.models.checkpoint import load_encoder, save_checkpoint
from unisurg.models.integrity import CHECKSUMS_NAME, write_checksums
from unisurg.models.presets import build_encoder
from unisurg.models.strict_load import CheckpointError
from unisurg.train import checkpointing as ckpt
from unisurg.train.pretrain_config import load_pretrain_config
from unisurg.train.trainer import train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return synth_store(tmp_path_factory.mktemp("fault_store"))


def tiny(store: Path, out: Path, *extra: str):
    return load_pretrain_config("tiny", [f"data.stores=[{store}]", f"run.out={out}", "run.progress=false",
                                         "run.keep_last=3", *extra])


@pytest.fixture(scope="module")
def runs(store, tmp_path_factory):
    """An uninterrupted 6-step run, and one stopped at step 4 (checkpoints at steps 2 and 4)."""
    root = tmp_path_factory.mktemp("fault_runs")
    full = train(tiny(store, root / "full"))
    train(tiny(store, root / "stopped", "schedule.max_steps=4"))
    return full, root / "stopped"


def _truncate(f: Path) -> None:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _zero(f: Path) -> None:
    f.write_bytes(bytes(f.stat().st_size))


def _flip(f: Path) -> None:
    data = bytearray(f.read_bytes())
    data[-9] ^= 0x10  # inside the last tensor's data: still a well-formed file
    f.write_bytes(bytes(data))


DAMAGE = [("weights.safetensors", _truncate), ("weights.safetensors", _zero), ("train_state.pt", _truncate),
          ("weights.safetensors", _flip), ("train_state.pt", _flip)]


@pytest.mark.parametrize("name, damage", DAMAGE, ids=[f"{n}-{d.__name__[1:]}" for n, d in DAMAGE])
def test_a_damaged_newest_checkpoint_is_named_and_the_older_one_used(runs, tmp_path, name, damage):
    _, stopped = runs
    run = shutil.copytree(stopped, tmp_path / "run")
    cdir = run / "checkpoints"
    damage(cdir / "step_00000004" / name)
    warnings: list[str] = []
    found = ckpt.newest_intact_checkpoint(cdir, warnings.append)
    assert found == cdir / "step_00000002"
    assert str(cdir / "step_00000004" / name) in warnings[0] and "DAMAGED CHECKPOINT" in warnings[0]
    assert "OLDER CHECKPOINT" in warnings[-1] and str(found) in warnings[-1]
    assert (cdir / "damaged-step_00000004").is_dir() and not (cdir / "step_00000004").exists()
    with pytest.raises(CheckpointError, match=name):
        ckpt.read_checkpoint(cdir / "damaged-step_00000004")


def test_resume_past_a_damaged_checkpoint_follows_the_uninterrupted_run(store, runs, tmp_path, capsys):
    full, stopped = runs
    run = shutil.copytree(stopped, tmp_path / "run")
    _flip(run / "checkpoints" / "step_00000004" / "weights.safetensors")
    resumed = train(tiny(store, run), resume=True)
    captured = capsys.readouterr()
    assert "DAMAGED CHECKPOINT" in captured.err and "step_00000004/weights.safetensors" in captured.err
    assert "note: DAMAGED CHECKPOINT" in captured.out  # repeated in the run's closing summary
    assert resumed.start_step == 2 and resumed.steps == 6
    ref = {r["step"]: r["loss"] for r in full.history}
    for r in resumed.history:
        assert r["loss"] == pytest.approx(ref[r["step"]], abs=1e-6)
    # every checkpoint now carries checksums, and the export too
    assert ckpt.verify_checksums(run / "checkpoints" / "step_00000006")
    assert ckpt.verify_checksums(run / "final")


def test_all_checkpoints_damaged_is_one_error_listing_each(runs, tmp_path):
    _, stopped = runs
    cdir = shutil.copytree(stopped, tmp_path / "run") / "checkpoints"
    _zero(cdir / "step_00000004" / "weights.safetensors")
    _truncate(cdir / "step_00000002" / "train_state.pt")
    with pytest.raises(CheckpointError, match=r"no intact checkpoint(.|\n)*step_00000004(.|\n)*step_00000002"):
        ckpt.newest_intact_checkpoint(cdir, lambda m: None)


def test_a_checkpoint_without_checksums_still_resumes_and_is_read_fully(runs, tmp_path):
    _, stopped = runs
    cdir = shutil.copytree(stopped, tmp_path / "run") / "checkpoints"
    for p in cdir.glob("step_*/checksums.json"):
        p.unlink()
    assert ckpt.newest_intact_checkpoint(cdir, pytest.fail) == cdir / "step_00000004"
    _truncate(cdir / "step_00000004" / "train_state.pt")  # no record: found by reading it
    warnings: list[str] = []
    assert ckpt.newest_intact_checkpoint(cdir, warnings.append) == cdir / "step_00000002"
    assert "train_state.pt" in warnings[0]


@pytest.mark.parametrize("pointer", ["../../elsewhere/step_00000009", "/tmp/step_00000004", "step_00000004/..",
                                     "not json"])
def test_latest_json_cannot_point_outside_the_run(runs, tmp_path, pointer):
    _, stopped = runs
    cdir = shutil.copytree(stopped, tmp_path / "run") / "checkpoints"
    outside = tmp_path / "elsewhere" / "step_00000009"
    shutil.copytree(cdir / "step_00000004", outside)
    text = pointer if pointer == "not json" else json.dumps({"step": 9, "dir": pointer})
    (cdir / "latest.json").write_text(text)
    assert ckpt.latest_checkpoint(cdir) == cdir / "step_00000004"
    warnings: list[str] = []
    assert ckpt.newest_intact_checkpoint(cdir, warnings.append) == cdir / "step_00000004"
    assert "latest.json" in warnings[0]


# -- model files read outside training -------------------------------------------------------------

def _saved_encoder(tmp_path: Path) -> Path:
    enc = build_encoder("tiny", embed_dim=32, depth=1, num_heads=2)
    save_checkpoint(tmp_path / "m", encoder=enc)
    return tmp_path / "m"


@pytest.mark.parametrize("cut", [0, 7, 200, -16])
def test_empty_or_truncated_safetensors_name_the_file(tmp_path, cut):
    folder = _saved_encoder(tmp_path)
    w = folder / "weights.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[:cut] if cut >= 0 else data[:cut])
    with pytest.raises(CheckpointError, match=str(w)):
        load_encoder(folder, which="encoder")
    (folder / "unisurg.json").unlink()  # the bare file alone: read through its metadata
    with pytest.raises(CheckpointError, match=str(w)):
        load_encoder(w, which="encoder")


def test_nan_or_inf_weights_are_refused_at_load(tmp_path):
    enc = build_encoder("tiny", embed_dim=32, depth=1, num_heads=2)
    with torch.no_grad():
        enc.blocks[0].mlp.fc1.weight[0, 0] = float("nan")
        enc.blocks[0].attn.proj.bias[1] = float("inf")
    save_checkpoint(tmp_path / "m", encoder=enc)
    with pytest.raises(CheckpointError, match=r"non-finite weights.*blocks\.0\.(attn|mlp)"):
        load_encoder(tmp_path / "m", which="encoder")


def test_an_exported_model_is_checked_against_its_checksums(runs):
    full, _ = runs
    final = full.out / "final"
    load_encoder(final)  # intact
    dst = final.parent / "final-copy"
    shutil.copytree(final, dst)
    _flip(dst / "weights.safetensors")
    with pytest.raises(CheckpointError, match=r"final-copy/weights\.safetensors: SHA-256"):
        load_encoder(dst)


def test_saving_over_a_checked_folder_drops_the_stale_record(tmp_path):
    folder = _saved_encoder(tmp_path)
    write_checksums(folder, [folder / "weights.safetensors", folder / "unisurg.json"])
    enc = build_encoder("tiny", embed_dim=32, depth=1, num_heads=2)
    save_checkpoint(folder, encoder=enc)  # other weights: the old record would call them damaged
    assert not (folder / CHECKSUMS_NAME).exists()
    assert torch.equal(load_encoder(folder, which="encoder").norm.weight, enc.norm.weight)


@pytest.mark.parametrize("damage", ["truncate", "nan"])
def test_hugging_face_backbone_folder_damage_is_named(tmp_path, damage):
    transformers = pytest.importorskip("transformers")

    vit = transformers.ViTModel(transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                                       num_attention_heads=2, intermediate_size=64),
                                add_pooling_layer=False)
    vit.save_pretrained(tmp_path / "vit")
    w = tmp_path / "vit" / "model.safetensors"
    if damage == "truncate":
        w.write_bytes(w.read_bytes()[:-100])
        match = rf"{tmp_path / 'vit'}: the Hugging Face model cannot be loaded"
    else:
        sd = load_file(str(w))
        key = sorted(sd)[0]
        sd[key][..., 0] = float("nan")
        save_file(sd, str(w), metadata={"format": "pt"})
        match = rf"{tmp_path / 'vit'}: non-finite weights"
    with pytest.raises(CheckpointError, match=match):
        load_backbone(f"hf-image:{tmp_path / 'vit'}")

