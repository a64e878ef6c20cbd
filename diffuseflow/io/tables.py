"""hkl tables: the integrated, corrected and merged observations, in mdx2 1.0.5's layout.

``/entry/hkl_table`` (``@mdx2_module=mdx2.data``, ``@mdx2_class=HKLTable``) holds one 1-D
dataset per column, all of the same length, plus ``ndiv`` (the Miller-grid subdivision): the
voxel of a row is ``round(h * ndiv[0]), round(k * ndiv[1]), round(l * ndiv[2])``. mdx2's
``loadobj`` reads every column it finds, so extra columns (ours) are harmless to it, and ours
read mdx2's tables as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h5py
import numpy as np

from diffuseflow.errors import InputError
from diffuseflow.io import nexus

#: mdx2's dtypes per column (integrate casts to these; other columns are written as given)
MDX2_DTYPES = {
    "h": np.float32, "k": np.float32, "l": np.float32,
    "phi": np.float32, "iy": np.float32, "ix": np.float32, "seconds": np.float32,
    "counts": np.int32, "pixels": np.int32, "n": np.float64,
    "s": np.float32, "intensity": np.float32, "intensity_error": np.float32,
    "rs_volume": np.float32, "op": np.int32, "count": np.int32,
}  # fmt: skip

#: voxel indices (H, K, L) pack into one int64 as three 21-bit fields, each offset by this
VOXEL_OFFSET = 1 << 20
_FIELD = (1 << 21) - 1


def pack_voxel(H, K, L):
    """One int64 key per voxel (scalars or arrays). Keys sort as (H, K, L) sort: every
    field is non-negative after the offset. diffuseflow.algorithms.integrate compiles this."""
    return ((H + VOXEL_OFFSET) << 42) | ((K + VOXEL_OFFSET) << 21) | (L + VOXEL_OFFSET)


def pack_voxels(HKL: np.ndarray) -> np.ndarray:
    """Keys of (n, 3) integer voxel indices."""
    HKL = np.asarray(HKL, np.int64)
    return pack_voxel(HKL[:, 0], HKL[:, 1], HKL[:, 2])


def unpack_voxels(keys: np.ndarray) -> np.ndarray:
    """(n, 3) int64 voxel indices of packed keys."""
    keys = np.asarray(keys, np.int64)
    return np.stack(
        [(keys >> 42) - VOXEL_OFFSET, ((keys >> 21) & _FIELD) - VOXEL_OFFSET,
         (keys & _FIELD) - VOXEL_OFFSET], 1,
    )  # fmt: skip


#: HDF5 gzip level of table columns (tables compress ~2x; level 1 is nearly as small as 9)
_TABLE_GZIP = 1


@dataclass
class HKLTable:
    """Columns of equal length plus the subdivision ndiv; h, k, l are floats (H / ndiv)."""

    columns: dict[str, np.ndarray]
    ndiv: tuple[int, int, int] = (1, 1, 1)
    attrs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.columns["h"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __contains__(self, name: str) -> bool:
        return name in self.columns

    def voxels(self) -> np.ndarray:
        """Integer voxel indices (H, K, L) of every row, shape (n, 3), int64."""
        return np.stack(
            [
                np.rint(self.columns[c] * d).astype(np.int64)
                for c, d in zip("hkl", self.ndiv, strict=True)
            ],
            axis=1,
        )

    def select(self, keep: np.ndarray) -> HKLTable:
        return HKLTable({k: v[keep] for k, v in self.columns.items()}, self.ndiv, dict(self.attrs))


def hkl_from_voxels(HKL: np.ndarray, ndiv) -> dict[str, np.ndarray]:
    """h, k, l columns (float32, as mdx2 stores them) of integer voxel indices."""
    return {c: (HKL[:, i] / ndiv[i]).astype(np.float32) for i, c in enumerate("hkl")}


def write_table(
    path, table: HKLTable, program: str, parameters: dict, inputs=(), sweep=None, dtypes=None
):
    """Write ``table`` as /entry/hkl_table of a new file, atomically."""
    dtypes = MDX2_DTYPES if dtypes is None else dtypes
    with nexus.atomic_output(path) as tmp:
        with nexus.new_file(tmp, program, parameters, inputs, sweep) as f:
            g = nexus.mdx2_group(f["entry"], "hkl_table", "mdx2.data", "HKLTable", "NXgroup")
            for k, v in table.attrs.items():
                g.attrs[k] = v
            for name, values in table.columns.items():
                arr = np.asarray(values)
                if name in dtypes:
                    arr = arr.astype(dtypes[name])
                kw = {}
                if arr.size > 4096:
                    kw = dict(compression="gzip", compression_opts=_TABLE_GZIP, shuffle=True)
                g.create_dataset(name, data=arr, **kw)
            g.create_dataset("ndiv", data=np.asarray(table.ndiv, np.int64))


def read_table(path, what: str = "an hkl table", need=()) -> HKLTable:
    """Read /entry/hkl_table (ours or mdx2's). ``need``: columns that must be present."""
    with nexus.open_input(path, what, ["hkl_table"]) as f:
        g = f["entry/hkl_table"]
        cols = {}
        n = None
        for name, d in g.items():
            if name == "ndiv" or not isinstance(d, h5py.Dataset):
                continue
            cols[name] = d[()]
            if cols[name].ndim != 1:
                raise InputError(f"{path}: hkl_table column {name!r} is not 1-D")
            if n is not None and len(cols[name]) != n:
                raise InputError(f"{path}: hkl_table columns have different lengths")
            n = len(cols[name])
        for c in ("h", "k", "l", *need):
            if c not in cols:
                raise InputError(f"{path}: hkl_table has no {c!r} column; is this {what}?")
        ndiv = tuple(int(v) for v in g["ndiv"][()]) if "ndiv" in g else (1, 1, 1)
        if len(ndiv) != 3 or min(ndiv) < 1:
            raise InputError(f"{path}: hkl_table ndiv {ndiv} is not three positive integers")
        attrs = {k: v for k, v in g.attrs.items() if k.startswith("diffuseflow_")}
        return HKLTable(cols, ndiv, attrs)
