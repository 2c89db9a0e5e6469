"""C3VD colonoscopy depth, as distributed (one folder per sequence)::

    ROOT/<sequence>/NNNN_color.png
    ROOT/<sequence>/NNNN_depth.tiff      16-bit, 0..65535 <-> 0..100 mm (read_depth_mm)

No standard split exists; ``by_sequence_v1`` (splits/c3vd.json) keeps every sequence in one split.
"""

from __future__ import annotations

import re
import warnings

from unisurg.datasets.base import (
    DatasetAdapter,
    DatasetLayoutError,
    DepthSample,
    empty_splits,
    register,
)
from unisurg.datasets.splitfiles import load_split_file

_COLOR = re.compile(r"^(\d+)_color\.png$")
_DEPTH = re.compile(r"^(\d+)_depth\.tiff?$")


@register("c3vd")
class C3VDAdapter(DatasetAdapter):
    """C3VD depth estimation, split by sequence (16 train / 2 val / 4 test of the 22 v1 sequences)."""

    task = "depth"
    class_names = ()
    default_split_scheme = "by_sequence_v1"
    split_schemes = ("by_sequence_v1",)

    def load(self) -> dict[str, list[DepthSample]]:
        scheme = load_split_file("c3vd.json")["schemes"][self.split_scheme]
        split_of = {seq: s for s, seqs in scheme.items() for seq in seqs}
        out, missing = empty_splits(), []
        present = {p.name for p in self.root.iterdir() if p.is_dir()}
        unknown = sorted(n for n in present if n not in split_of and any(_DEPTH.match(f.name) for f in (self.root / n).iterdir()))
        if unknown:
            warnings.warn(f"C3VDAdapter: sequences not in split scheme {self.split_scheme} are skipped: {', '.join(unknown)}",
                          stacklevel=2)
        for seq in sorted(split_of):
            folder = self.root / seq
            if not folder.is_dir():
                missing.append(str(folder))
                continue
            colors = {int(m.group(1)): p for p in folder.iterdir() if (m := _COLOR.match(p.name))}
            depths = {int(m.group(1)): p for p in folder.iterdir() if (m := _DEPTH.match(p.name))}
            lonely = sorted(set(colors) ^ set(depths))
            if lonely:
                raise DatasetLayoutError(
                    f"C3VDAdapter: {folder}: frames {lonely[:5]} have a colour image without depth map or the reverse"
                )
            if not colors:
                raise DatasetLayoutError(f"C3VDAdapter: {folder} holds no NNNN_color.png / NNNN_depth.tiff pairs")
            split = split_of[seq]
            for k in sorted(colors):
                out[split].append(DepthSample(f"{seq}/{k:04d}", colors[k], depths[k], split, seq))
        self._missing("sequences", missing)
        return out
