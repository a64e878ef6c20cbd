"""The strong-pixel list that the import writes beside the stack (``/entry/diffuseflow_strong``
in data.nxs): every valid pixel above a per-frame floor, with its counts, and the sampled
value histogram of every frame-chunk.

find_peaks reads this instead of decoding the stack again whenever its count_threshold is at
or above the highest floor: a rerun after retuning the threshold then costs a read of a few
megabytes. The layout (one row per listed pixel, C order of (frame, iy, ix)):

- ``frame``, ``iy``, ``ix``, ``counts`` (int32): the listed pixels;
- ``first`` (int64, frames + 1): pixels of frame k are rows first[k]:first[k + 1];
- ``floor`` (float64, per frame): pixels with counts > floor[k] are all listed (NaN: frame not
  scanned, e.g. another slab job's);
- ``n_valid`` (int64, per frame): valid pixels of the frame;
- ``histogram`` (int64, chunk-slabs x bins) and ``histogram_frames`` (start, stop per row): the
  value histogram of every HIST_STRIDE-th pixel along x, per frame-chunk.

The pixel columns are written in whole chunks as they fill, straight to the file (no chunk
cache), so the list costs no memory beyond one chunk and a full disk fails a write, not the
file's close.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import h5py
import numpy as np

from diffuseflow.errors import InputError
from diffuseflow.io import bslz4

GROUP = "entry/diffuseflow_strong"
COLUMNS = ("frame", "iy", "ix", "counts")
#: rows per stored chunk of the pixel columns
ROWS_PER_CHUNK = 1 << 18


def stack_fingerprint(dset: h5py.Dataset) -> str:
    """A digest of where and how large every stored chunk of the stack is (HDF5 metadata,
    nothing decoded): any rewrite of the stack after the import that changes a chunk's stored
    bytes moves or resizes it, and so changes this (the list is then stale)."""
    h = hashlib.sha256()
    if dset.chunks is None or dset.is_virtual:
        h.update(repr((dset.shape, dset.id.get_offset())).encode())
        return h.hexdigest()
    rows = []
    dset.id.chunk_iter(lambda c: rows.append((*c.chunk_offset, c.byte_offset, c.size)))
    h.update(np.asarray(rows, np.int64).tobytes())
    return h.hexdigest()


def is_current(f: h5py.File, dset: h5py.Dataset) -> bool:
    """Was the list made from the stack as it is now?"""
    return f[GROUP].attrs.get("stack_fingerprint") == stack_fingerprint(dset)


def _filters(codec: str) -> dict:
    if codec == "bslz4":
        return bslz4.filter_options()
    return dict(compression="gzip", compression_opts=1, shuffle=True)


class StrongPixelWriter:
    """Appends the strong pixels of each scanned frame, in frame order, to an open data.nxs."""

    def __init__(self, entry: h5py.Group, n_frames: int, slabs, bins: int, attrs: dict, codec):
        g = entry.create_group("diffuseflow_strong")
        for k, v in attrs.items():
            g.attrs[k] = v
        self.group = g
        self.columns = [
            g.create_dataset(
                name,
                shape=(0,),
                maxshape=(None,),
                dtype=np.int32,
                chunks=(ROWS_PER_CHUNK,),
                rdcc_nbytes=0,  # whole chunks go straight to the file
                **_filters(codec),
            )
            for name in COLUMNS
        ]
        self.pending: list[list[np.ndarray]] = [[] for _ in COLUMNS]
        self.n_pending = 0
        self.n_written = 0
        self.per_frame = np.zeros(n_frames, np.int64)
        self.floor = np.full(n_frames, np.nan)
        self.n_valid = np.zeros(n_frames, np.int64)
        self.slabs = [tuple(s) for s in slabs]
        self.histogram = g.create_dataset(
            "histogram",
            shape=(len(self.slabs), bins),
            dtype=np.int64,
            chunks=(1, bins),
            compression="gzip",
            compression_opts=1,
            rdcc_nbytes=0,
        )
        g.create_dataset("histogram_frames", data=np.asarray(self.slabs, np.int64).reshape(-1, 2))

    def add_frame(self, frame: int, floor: float, n_valid: int, iy, ix, counts):
        self.per_frame[frame] = len(iy)
        self.floor[frame] = floor
        self.n_valid[frame] = n_valid
        self.append(np.full(len(iy), frame, np.int32), iy, ix, counts)

    def append(self, *cols):
        """Rows (frame, iy, ix, counts), after every row already written."""
        for buf, col in zip(self.pending, cols, strict=True):
            buf.append(np.asarray(col, np.int32))
        self.n_pending += len(cols[0])
        if self.n_pending >= ROWS_PER_CHUNK:
            self._flush(final=False)

    def add_histogram(self, start: int, stop: int, hist: np.ndarray):
        self.histogram[self.slabs.index((start, stop))] = hist

    def _flush(self, final: bool):
        whole = self.n_pending if final else self.n_pending // ROWS_PER_CHUNK * ROWS_PER_CHUNK
        if whole == 0:
            return
        end = self.n_written + whole
        for k, (dset, buf) in enumerate(zip(self.columns, self.pending, strict=True)):
            joined = np.concatenate(buf)
            dset.resize((end,))
            dset[self.n_written : end] = joined[:whole]
            self.pending[k] = [joined[whole:]]
        self.n_written = end
        self.n_pending -= whole

    def close(self, stack: h5py.Dataset):
        """Write what is left, the per-frame index and the fingerprint of the finished
        ``stack`` (call before the file closes)."""
        self._flush(final=True)
        g = self.group
        g.attrs["stack_fingerprint"] = stack_fingerprint(stack)
        g.create_dataset("first", data=np.concatenate([[0], np.cumsum(self.per_frame)]))
        g.create_dataset("floor", data=self.floor)
        g.create_dataset("n_valid", data=self.n_valid)


@dataclass
class StrongPixels:
    """The list as read back for frames [start, stop)."""

    frame: np.ndarray
    iy: np.ndarray
    ix: np.ndarray
    counts: np.ndarray
    n_valid: int
    histogram: np.ndarray


def has_strong_pixels(f: h5py.File) -> bool:
    return GROUP in f and "first" in f[GROUP]


def histogram_rows(f: h5py.File, start: int, stop: int):
    """Indices of the histogram rows that tile frames [start, stop) exactly, or None."""
    rows = f[GROUP]["histogram_frames"][()]
    picked = np.flatnonzero((rows[:, 0] >= start) & (rows[:, 1] <= stop))
    covered = int(np.sum(rows[picked, 1] - rows[picked, 0]))
    return picked if covered == stop - start else None


def read_histogram(f: h5py.File, rows) -> np.ndarray:
    h = f[GROUP]["histogram"]
    return np.sum([h[int(r)] for r in rows], axis=0) if len(rows) else np.zeros(h.shape[1], int)


def read_strong_pixels(f: h5py.File, start: int, stop: int, min_counts=None) -> StrongPixels:
    """The listed pixels of frames [start, stop) (only counts > min_counts, if given)."""
    g = f[GROUP]
    first = g["first"]
    a, b = int(first[start]), int(first[stop])
    cols = [g[name][a:b] for name in COLUMNS]
    if min_counts is not None:
        keep = cols[3] > min_counts
        cols = [c[keep] for c in cols]
    rows = histogram_rows(f, start, stop)
    if rows is None:
        raise InputError(f"{f.filename}: frames {start}-{stop} do not tile its histogram rows")
    return StrongPixels(
        *(c.astype(np.int64) for c in cols),
        int(np.sum(g["n_valid"][start:stop])),
        read_histogram(f, rows),
    )


def gather_strong_pixels(parts: list[h5py.File], out: h5py.Group, codec: str, stack):
    """Join the lists of slab jobs' partial files (sorted by frame) into ``out`` (the entry of
    the gathered file, which must not have the group yet); nothing if a part has none."""
    if not all(has_strong_pixels(p) for p in parts):
        return
    src = [p[GROUP] for p in parts]
    first = src[0]
    n_frames = len(first["floor"])
    slabs = [tuple(r) for r in first["histogram_frames"][()]]
    attrs = dict(first.attrs)
    writer = StrongPixelWriter(out, n_frames, slabs, first["histogram"].shape[1], attrs, codec)
    for s in src:
        n = s["frame"].shape[0]
        for i in range(0, n, ROWS_PER_CHUNK):
            writer.append(*(s[name][i : i + ROWS_PER_CHUNK] for name in COLUMNS))
        writer.per_frame += np.diff(s["first"][()])
        writer.floor = np.fmax(writer.floor, s["floor"][()])
        writer.n_valid += s["n_valid"][()]
    for r in range(len(slabs)):
        writer.histogram[r] = np.sum([s["histogram"][r] for s in src], axis=0)
    writer.close(stack)
