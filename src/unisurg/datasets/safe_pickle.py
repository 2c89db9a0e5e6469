"""Loading annotation pickles without executing arbitrary code.

PmLR50 distributes its labels as pickles.  ``pickle.load`` would run any callable a file names, so
this unpickler resolves only builtin containers/scalars and the numpy pieces needed to rebuild
arrays and scalars; anything else is refused with the offending ``module.name``.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

_ALLOWED = {
    ("builtins", n)
    for n in ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str", "bytes",
              "bytearray", "bool", "slice", "range")
} | {
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("_codecs", "encode"),  # protocol-2 pickles store bytes as encode(str, "latin1")
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references a global that is not on the allow-list."""


class RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str):
        # numpy.dtypes.<Kind>DType: the dtype classes some numpy versions pickle by name
        if (module, name) in _ALLOWED or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{self._source}: refuses to load global {module}.{name}; annotation pickles may only hold "
            "dicts, lists, tuples, numbers, strings and numpy arrays"
        )


def load_pickle(path: Path | str):
    """Unpickle ``path`` allowing only builtin containers, numbers, strings and numpy arrays."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return RestrictedUnpickler(io.BytesIO(data), str(path)).load()
    except UnsafePickleError:
        raise
    except Exception as e:
        raise pickle.UnpicklingError(f"{path}: not a readable pickle: {e}") from None
