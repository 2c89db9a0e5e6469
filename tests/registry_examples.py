"""A tiny example of every registered backbone kind and every dataset adapter, in its own on-disk layout.

``tests/test_registries.py`` runs the same smoke test over every entry of each registry; a kind or adapter
registered without an example here fails there, naming this file. Each builder writes into ``root`` and
returns the backbone spec string / the dataset root. The layouts are the ones the dedicated tests of each
loader and adapter check in detail (``test_backbones.py``, ``test_video_baselines.py``, ``test_adapters.py``).
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unisurg.datasets.surgrec import SURGREC_FOLDERS
from unisurg.models import EncoderConfig, VideoViT, build_predictor, export_vjepa2, save_checkpoint

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "baselines"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _tiny_vit(seed: int = 0) -> VideoViT:
    torch.manual_seed(seed)
    return VideoViT(EncoderConfig(embed_dim=32, depth=1, num_heads=2, name="tiny")).eval()


# -- backbones ------------------------------------------------------------------------------------


def _unisurg(root: Path) -> str:
    save_checkpoint(root / "run", encoder=_tiny_vit(1), target_encoder=_tiny_vit(2),
                    extra={"img_size": 32, "num_frames": 4})
    return f"unisurg:{root / 'run'}"


def _vjepa2(root: Path) -> str:
    enc = _tiny_vit(3)
    export_vjepa2(enc, root / "vitl.pt", predictor=build_predictor(enc, predictor_dim=16, depth=1, num_heads=2),
                  num_frames=4, img_size=32)
    return f"vjepa2:{root / 'vitl.pt'}?num_heads=2&img_size=32&num_frames=4"


def _hf_vjepa2(root: Path) -> str:
    from transformers import VJEPA2Config, VJEPA2Model

    cfg = VJEPA2Config(hidden_size=32, num_attention_heads=2, num_hidden_layers=1, mlp_ratio=2.0, crop_size=32,
                       frames_per_clip=4, patch_size=16, tubelet_size=2, pred_hidden_size=16,
                       pred_num_attention_heads=2, pred_num_hidden_layers=1, pred_num_mask_tokens=2)
    torch.manual_seed(4)
    VJEPA2Model(cfg).eval().save_pretrained(root / "hf")
    return f"hf-vjepa2:{root / 'hf'}"


def _videomae(root: Path) -> str:
    from transformers import VideoMAEConfig, VideoMAEModel

    cfg = VideoMAEConfig(image_size=32, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=32,
                         num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    torch.manual_seed(5)
    VideoMAEModel(cfg).eval().save_pretrained(root / "vm")
    return f"videomae:{root / 'vm'}"


def _dinov3(root: Path) -> str:
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    cfg = DINOv3ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                          patch_size=8, image_size=32, num_register_tokens=2)
    torch.manual_seed(6)
    DINOv3ViTModel(cfg).eval().save_pretrained(root / "dino")
    return f"dinov3:{root / 'dino'}"


def _hf_image(root: Path) -> str:
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=64)
    torch.manual_seed(7)
    ViTModel(cfg, add_pooling_layer=False).eval().save_pretrained(root / "vit")
    return f"hf-image:{root / 'vit'}"


def _timm_vit(root: Path) -> str:
    g = torch.Generator().manual_seed(8)
    dim, hidden, grid, patch = 32, 64, 4, 8
    r = lambda *s: torch.randn(*s, generator=g) * 0.1  # noqa: E731
    sd = {"patch_embed.proj.weight": r(dim, 3, patch, patch), "patch_embed.proj.bias": r(dim),
          "pos_embed": r(1, grid * grid + 1, dim), "cls_token": r(1, 1, dim),
          "norm.weight": 1 + r(dim), "norm.bias": r(dim)}
    p = "blocks.0."
    sd.update({p + "norm1.weight": 1 + r(dim), p + "norm1.bias": r(dim), p + "attn.qkv.weight": r(3 * dim, dim),
               p + "attn.qkv.bias": r(3 * dim), p + "attn.proj.weight": r(dim, dim), p + "attn.proj.bias": r(dim),
               p + "norm2.weight": 1 + r(dim), p + "norm2.bias": r(dim), p + "mlp.fc1.weight": r(hidden, dim),
               p + "mlp.fc1.bias": r(hidden), p + "mlp.fc2.weight": r(dim, hidden), p + "mlp.fc2.bias": r(dim)})
    torch.save({"model": sd}, root / "endovit.pth")
    return f"timm-vit:{root / 'endovit.pth'}?num_heads=2"


def _resnet50(root: Path) -> str:
    g = torch.Generator().manual_seed(9)
    sd = {}

    def conv(name, cout, cin, k):
        sd[name + ".weight"] = torch.randn(cout, cin, k, k, generator=g) * (2.0 / (cin * k * k)) ** 0.5

    def bn(name, c):
        sd.update({name + ".weight": torch.ones(c), name + ".bias": torch.zeros(c), name + ".running_mean": torch.zeros(c),
                   name + ".running_var": torch.ones(c), name + ".num_batches_tracked": torch.tensor(0)})

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    cin = 64
    for layer, (width, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], start=1):
        for b in range(blocks):
            p = f"layer{layer}.{b}."
            conv(p + "conv1", width, cin, 1)
            bn(p + "bn1", width)
            conv(p + "conv2", width, width, 3)
            bn(p + "bn2", width)
            conv(p + "conv3", width * 4, width, 1)
            bn(p + "bn3", width * 4)
            if b == 0:
                conv(p + "downsample.0", width * 4, cin, 1)
                bn(p + "downsample.1", width * 4)
            cin = width * 4
    torch.save(sd, root / "resnet50.pth")
    return f"resnet50:{root / 'resnet50.pth'}"


def _official_fixture(family: str):
    """The committed official-layout fixture of a video baseline (tests/fixtures/baselines/<family>)."""

    def build(root: Path) -> str:
        spec = json.loads((FIXTURES / family / "source.json").read_text())["spec"]
        spec = re.sub(r"\[.*?\]", "", spec)  # optional parts, written [&key=value]
        return spec.replace("weights.pth", str(FIXTURES / family / "weights.pth"))

    return build


BACKBONE_EXAMPLES = {
    "unisurg": _unisurg,
    "vjepa2": _vjepa2,
    "hf-vjepa2": _hf_vjepa2,
    "random": lambda root: "random:tiny@0?embed_dim=32&depth=1&num_heads=2",
    "videomae": _videomae,
    "dinov3": _dinov3,
    "hf-image": _hf_image,
    "timm-vit": _timm_vit,
    "resnet50": _resnet50,
    "endofm": _official_fixture("endofm"),
    "videomaev2": _official_fixture("videomaev2"),
    "surgrec-mae": _official_fixture("surgrec_mae"),
    "internvideo2": _official_fixture("internvideo2"),
    "surgenet": lambda root: f"surgenet:{FIXTURES / 'surgenet' / 'caformer_surgenet.pth'}",
    "gsvit": lambda root: f"gsvit:{FIXTURES / 'gsvit' / 'gsvit_tiny.pkl'}?resolution=128&window=3",
    "selfsupsurg": lambda root: f"selfsupsurg:{FIXTURES / 'selfsupsurg' / 'model_final_checkpoint_tiny.torch'}",
    "endomamba": lambda root: f"endomamba:{FIXTURES / 'endomamba' / 'endomamba_pretrain_tiny.pth'}",
    "surgvlp": lambda root: f"surgvlp:{FIXTURES / 'surgvlp' / 'surgvlp_tiny.pth'}?tokenizer={FIXTURES / 'surgvlp' / 'tokenizer'}"
                          "&text_heads=2",
    "gastronet": lambda root: f"gastronet:{FIXTURES / 'gastronet' / 'dino_checkpoint_tiny.pth'}?num_heads=2",
}


# -- datasets -------------------------------------------------------------------------------------

CHOLEC80_PHASES = ["Preparation", "CalotTriangleDissection", "ClippingCutting", "GallbladderDissection",
                   "GallbladderPackaging", "CleaningCoagulation", "GallbladderRetraction"]
CHOLEC80_TOOLS = ["Grasper", "Bipolar", "Hook", "Scissors", "Clipper", "Irrigator", "SpecimenBag"]


def _cholec80(root: Path) -> Path:
    for n in (1, 33, 41):  # one video in each of train / val / test of the 32/8/40 split
        rows = "".join(f"{f}\t{CHOLEC80_PHASES[f // 40]}\n" for f in range(101))
        _write(root / "phase_annotations" / f"video{n:02d}-phase.txt", "Frame\tPhase\n" + rows)
        tools = "".join(f"{25 * r}\t" + "\t".join(str((r + k) % 2) for k in range(7)) + "\n" for r in range(4))
        _write(root / "tool_annotations" / f"video{n:02d}-tool.txt", "Frame\t" + "\t".join(CHOLEC80_TOOLS) + "\n" + tools)
    return root


def _synthetic(root: Path) -> Path:
    for n in range(1, 6):
        rows = "".join(f"{f}\t{CHOLEC80_PHASES[f // 40]}\n" for f in range(75))
        _write(root / "phase_annotations" / f"video{n:02d}-phase.txt", "Frame\tPhase\n" + rows)
    return root


def _m2cai16(root: Path) -> Path:
    _write(root / "train_dataset" / "workflow_video_01.txt", "Frame\tPhase\n0\tTrocarPlacement\n40\tPreparation\n")
    _write(root / "train_dataset" / "workflow_video_24.txt", "Frame\tPhase\n0\tTrocarPlacement\n")
    _write(root / "test_dataset" / "test_workflow_video_01.txt", "0 GallbladderRetraction\n10 CleaningCoagulation\n")
    return root


def _autolaparo(root: Path) -> Path:
    for n in (1, 12, 15):
        _write(root / "labels" / f"label_{n:02d}.txt", "Frame\tPhase\n1\t1\n2\t1\n3\t2\n4\t7\n")
    return root


def _pitvis(root: Path) -> Path:
    for n in (2, 1, 3):
        _write(root / f"annotations_{n:02d}.csv", f"int_video,int_time,int_step\n{n},0,-1\n{n},1,1\n{n},2,14\n")
    return root


def _ophnet(root: Path) -> Path:
    _write(root / "OphNet2024_loca_challenge_phase.csv", "video_id,start,end,split,surgery_id,phase_id\n"
           "case_0001,0,2.5,train,5,3\ncase_0002,0,3,val,0,6\ncase_0003,1,2,test,1,51\n")
    return root


def _egosurgery(root: Path) -> Path:
    for v in ("01_1", "05_1", "06_1"):
        _write(root / "annotations" / f"{v}.csv", "Frame,Phase\n0,disinfection\n1,design\n2,incision\n")
    return root


def _pmlr50(root: Path) -> Path:
    d = root / "labels_pkl"
    (d / "train").mkdir(parents=True)
    (d / "test").mkdir()
    train = {"01": [{"frame_id": i, "phase_gt": p} for i, p in enumerate([0, 0, 3, 4])]}
    (d / "train" / "1fpstrain.pickle").write_bytes(pickle.dumps(train, protocol=4))
    (d / "test" / "1fpstest.pickle").write_bytes(pickle.dumps({"40": [{"frame_id": 0, "phase_gt": 2}]}))
    return root


def _cholect50(root: Path) -> Path:
    names = {"instrument": ["grasper", "hook"], "verb": ["grasp", "null_verb"], "target": ["gallbladder", "null_target"],
             "triplet": ["grasper,grasp,gallbladder", "hook,null_verb,null_target"], "phase": ["preparation"]}
    cats = {k: {str(i): n for i, n in enumerate(v)} for k, v in names.items()}
    inst = [0, 0, 1, 0.1, 0.1, 0.2, 0.2, 0, 0, 1, -1, -1, -1, -1, 0]
    for n in (79, 92, 2):  # fold 1: test, validation, training
        frames = {"0": [inst], "1": [[-1] * 14 + [0]]}
        _write(root / "labels" / f"VID{n:02d}.json", json.dumps({"video": n, "fps": 1, "num_frames": 2,
                                                                  "categories": cats, "annotations": frames}))
    return root


def _jigsaws(root: Path) -> Path:
    rows = [f"Suturing_{s}00{k}\t\tN\t12\t\t2\t2\t2\t2\t2\t2" for s in "BCDEFGHI" for k in (1, 2, 3, 4, 5)]
    _write(root / "Suturing" / "meta_file_Suturing.txt", "\n".join(rows) + "\n")
    return root


def _surgicalactions160(root: Path) -> Path:
    for c in range(1, 17):
        for k in range(1, 11):
            _write(root / f"{c:02d}_action" / f"{c:02d}_{k:02d}.mp4", "")
    return root


def _clip_lists(root: Path) -> Path:
    _write(root / "splits" / "train.txt", "".join(f"clip{i:02d}.mp4,{i % 2}\n" for i in range(20)))
    _write(root / "splits" / "val.txt", "v0.mp4,0\nv1.mp4,1\n")
    return root


def _surgrec(root: Path) -> Path:
    _write(root / "train.csv", "__DATA_ROOT__/a/clip 1.mp4 0\n__DATA_ROOT__/a/clip2.mp4 1\n")
    _write(root / "test.csv", "__DATA_ROOT__/a/clip3.mp4 1\n")
    return root


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def _polyp(root: Path) -> Path:
    for stem in ["1", "2", "cju0abc", "cju0def"]:
        _png(root / "TrainDataset" / "image" / f"{stem}.png", 100)
        _png(root / "TrainDataset" / "mask" / f"{stem}.png", 255)
    for name in ("Kvasir", "CVC-ClinicDB", "CVC-300", "CVC-ColonDB", "ETIS-LaribPolypDB"):
        _png(root / "TestDataset" / name / "images" / "x.png", 10)
        _png(root / "TestDataset" / name / "masks" / "x.png", 0)
    return root


def _c3vd(root: Path) -> Path:
    for seq in ("cecum_t1_a", "cecum_t3_a", "cecum_t2_a"):
        _png(root / seq / "0000_color.png", 50)
        (root / seq).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), 1000, np.uint16)).save(root / seq / "0000_depth.tiff")
    return root


def _surgrec_folder(folder: str):
    """A SurgRec split folder (``ROOT/splits/<folder>/``: train/test CSVs and a flat label map)."""

    def build(root: Path) -> Path:
        d = root / "splits" / folder
        rows = [f"__DATA_ROOT__/{folder}/class a/video01_1.mp4 0", f"__DATA_ROOT__/{folder}/class b/video02_1.mp4 1"]
        _write(d / "train.csv", "".join(r + "\n" for r in rows))
        _write(d / "test.csv", rows[0] + "\n")
        _write(d / "label_map.json", json.dumps({"class a": 0, "class b": 1}))
        return root

    return build


# dataset name -> (builder, adapter keyword arguments)
DATASET_EXAMPLES = {
    "cholec80": (_cholec80, {"strict": False}),
    "synthetic": (_synthetic, {}),
    "m2cai16": (_m2cai16, {"strict": False}),
    "autolaparo": (_autolaparo, {"strict": False}),
    "pitvis": (_pitvis, {"strict": False}),
    "ophnet": (_ophnet, {"strict": False}),
    "egosurgery": (_egosurgery, {"strict": False}),
    "pmlr50": (_pmlr50, {"strict": False}),
    "cholect50": (_cholect50, {"strict": False}),
    "cholect45": (_cholect50, {"strict": False}),
    "jigsaws": (_jigsaws, {}),
    "surgicalactions160": (_surgicalactions160, {}),
    "polypdiag": (_clip_lists, {}),
    "avos": (_clip_lists, {}),
    "surgrec": (_surgrec, {"strict": False, "split_dir": "ROOT"}),
    "polyp": (_polyp, {"strict": False}),
    "c3vd": (_c3vd, {"strict": False}),
}
DATASET_EXAMPLES.update({f"surgrec-{folder.lower()}": (_surgrec_folder(folder), {"strict": False})
                         for folder in SURGREC_FOLDERS})
