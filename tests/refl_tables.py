"""Read DIALS reflection tables without DIALS (tests only): the current msgpack ``.refl``
and the old Python-2 pickles of a flex ``reflection_table``.

A pickled flex array's state is (grid, bytes): the bytes hold the element count and then the
elements in scitbx's base-256 serialization (scitbx/serialization/base_256.h): an integer is
a header byte (its low 7 bits: the field length including the header; bit 7: negative)
followed by little-endian magnitude bytes; a double is a header byte, the mantissa's
fraction digits base 256 (most significant first), then its binary exponent as an integer.
Only the columns the geometry test needs are decoded.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np

#: flex element types: (values per element, kind) for the columns decoded here
_PICKLED = {
    "vec3_double": (3, "double"),
    "double": (1, "double"),
    "int": (1, "int"),
    "size_t": (1, "int"),
    "miller_index": (3, "int"),
}
_MSGPACK = {
    "vec3<double>": ("<f8", 3),
    "double": ("<f8", 1),
    "int": ("<i4", 1),
    "std::size_t": ("<u8", 1),
    "cctbx::miller::index<>": ("<i4", 3),
}


def _int(buf: bytes, pos: int) -> tuple[int, int]:
    head = buf[pos]
    n = head & 0x7F
    if n == 0:
        return 0, pos + 1
    value = int.from_bytes(buf[pos + 1 : pos + n], "little")
    return (-value if head > 128 else value), pos + n


def _double(buf: bytes, pos: int) -> tuple[float, int]:
    head = buf[pos]
    n = head & 0x7F
    if n == 0:
        return 0.0, pos + 1
    fraction = 0.0
    for byte in reversed(buf[pos + 1 : pos + n]):
        fraction = (fraction + byte) / 256.0
    exponent, end = _int(buf, pos + n)
    value = math.ldexp(fraction, exponent)
    return (-value if head > 128 else value), end


class _Flex:
    """Stand-in for any scitbx/cctbx/dials flex type: keeps its pickled state."""

    type_name = ""

    def __init__(self, *args):
        self.args = args
        self.state = None

    def __setstate__(self, state):
        self.state = state

    def decode(self) -> np.ndarray | None:
        spec = _PICKLED.get(self.type_name)
        if spec is None or not isinstance(self.state, tuple):
            return None
        width, kind = spec
        blob = next((s for s in self.state if isinstance(s, bytes | str)), None)
        if blob is None:
            return None
        buf = blob.encode("latin-1") if isinstance(blob, str) else blob
        count, pos = _int(buf, 0)
        read = _double if kind == "double" else _int
        values = np.empty(count * width, float if kind == "double" else np.int64)
        for i in range(count * width):
            values[i], pos = read(buf, pos)
        return values.reshape(count, width) if width > 1 else values


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module.endswith("flex_ext") or module.startswith(("dials", "scitbx", "cctbx")):
            return type(name, (_Flex,), {"type_name": name})
        return super().find_class(module, name)


def _columns_of(state) -> dict:
    """The {name: column} dict inside a pickled reflection_table's state (v1 and v2)."""
    if isinstance(state, dict) and any(isinstance(k, str) for k in state):
        if any(isinstance(v, _Flex) for v in state.values()):
            return state
    if isinstance(state, tuple | list):
        for item in state:
            found = _columns_of(item)
            if found:
                return found
    return {}


def read_reflections(path, columns=("miller_index", "xyzcal.px", "xyzcal.mm", "id")) -> dict:
    """The named columns of a DIALS reflection table (msgpack or pickle) as numpy arrays."""
    data = Path(path).read_bytes()
    if data[:1] in (b"\x93", b"\x92", b"\x94"):  # msgpack array: (type, version, body)
        import msgpack

        _, _, body = msgpack.unpackb(data, raw=False, strict_map_key=False)
        out = {}
        for name, (ctype, (n, blob)) in body["data"].items():
            if name in columns and ctype in _MSGPACK:
                dtype, width = _MSGPACK[ctype]
                arr = np.frombuffer(blob, dtype)
                out[name] = arr.reshape(n, width) if width > 1 else arr
        return out
    table = _Unpickler(__import__("io").BytesIO(data), encoding="latin-1").load()
    cols = _columns_of(table.state)
    out = {}
    for name in columns:
        if name in cols:
            arr = cols[name].decode()
            if arr is not None:
                out[name] = arr
    return out
