"""Image readers: CBF and SMV through fabio, Eiger/NeXus HDF5 through h5py + hdf5plugin.

Every frame comes out as int32 in the panel's (slow, fast) shape, with invalid pixels set to
-1: values outside the panel's trusted range (inclusive, as in dxtbx >= 3.12), the panel's
static mask rectangles (module gaps), a DIALS mask file when one is given, an Eiger pixel
mask, and untrusted regions from the user (DIALS' ``untrusted.circle``/``rectangle``).
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass

import numpy as np
from numba import njit

from diffuseflow.errors import InputError
from diffuseflow.io.expt import Experiment

INVALID = -1


@njit(cache=True, nogil=True)
def _to_int32_marked(raw, static_invalid, lo, hi, out):
    """out = raw as int32, or -1 where static_invalid or raw outside [lo, hi]: one pass."""
    ny, nx = raw.shape
    for j in range(ny):
        for i in range(nx):
            v = raw[j, i]
            if static_invalid[j, i] or v < lo or v > hi:
                out[j, i] = -1
            else:
                out[j, i] = v


_COMPRESSED = (".bz2", ".gz")


def image_format(path: str) -> str:
    """'cbf', 'smv' or 'hdf5' from the file name (a .bz2/.gz suffix is looked through)."""
    name = path.lower()
    for ext in _COMPRESSED:
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    if name.endswith(".cbf"):
        return "cbf"
    if name.endswith((".img", ".smv")):
        return "smv"
    if name.endswith((".h5", ".nxs", ".hdf5", ".nx5")):
        if path.lower().endswith(_COMPRESSED):
            raise InputError(f"{path}: compressed HDF5 files cannot be read; decompress them")
        return "hdf5"
    raise InputError(f"{path}: unknown image format (expected .cbf, .img/.smv or .h5)")


# ------------------------------------------------------------------------------------------
# untrusted regions


@dataclass(frozen=True)
class Region:
    """An untrusted region in pixel coordinates (x = fast, y = slow), as DIALS defines them.

    circle: pixels whose centre lies within radius r of (x, y);
    rectangle: pixels with x0 <= ix < x1 and y0 <= iy < y1.
    """

    kind: str
    values: tuple[float, ...]

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        ny, nx = shape
        if self.kind == "circle":
            x, y, r = self.values
            iy, ix = np.ogrid[:ny, :nx]
            return (ix + 0.5 - x) ** 2 + (iy + 0.5 - y) ** 2 <= r * r
        x0, x1, y0, y1 = (int(round(v)) for v in self.values)
        m = np.zeros(shape, bool)
        m[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
        return m


def parse_untrusted(specs, source: str = "untrusted") -> list[Region]:
    """Parse DIALS-style specs: ``"circle=x,y,r"``, ``"rectangle=x0,x1,y0,y1"``.

    Also accepts mappings ``{"circle": [x, y, r]}`` (as written in YAML config).
    """
    regions = []
    for k, spec in enumerate(specs or []):
        where = f"{source}[{k}]"
        if isinstance(spec, dict):
            if len(spec) != 1:
                raise InputError(f"{where}: give exactly one of circle or rectangle")
            kind, vals = next(iter(spec.items()))
        else:
            m = re.fullmatch(r"\s*(circle|rectangle)\s*=\s*(.*)", str(spec))
            if not m:
                raise InputError(
                    f"{where}: {spec!r} is not 'circle=x,y,r' or 'rectangle=x0,x1,y0,y1'"
                )
            kind, vals = m.group(1), m.group(2).split(",")
        try:
            vals = tuple(float(v) for v in vals)
        except (TypeError, ValueError):
            raise InputError(f"{where}: {spec!r} has a value that is not a number") from None
        need = {"circle": 3, "rectangle": 4}.get(kind)
        if need is None:
            raise InputError(f"{where}: unknown region type {kind!r} (circle or rectangle)")
        if len(vals) != need:
            raise InputError(f"{where}: {kind} needs {need} numbers, got {len(vals)}")
        if kind == "circle" and vals[2] <= 0:
            raise InputError(f"{where}: circle radius must be > 0")
        if kind == "rectangle" and (vals[1] <= vals[0] or vals[3] <= vals[2]):
            raise InputError(f"{where}: rectangle needs x0 < x1 and y0 < y1")
        regions.append(Region(kind, vals))
    return regions


def _load_dials_mask(path: str, shape) -> np.ndarray:
    """A DIALS mask pickle (tuple of flex.bool, True = good) -> bool array, True = invalid."""
    try:
        with open(path, "rb") as fh:
            obj = pickle.load(fh)  # noqa: S301 - a DIALS mask file named by the user's .expt
    except FileNotFoundError:
        raise InputError(f"{path}: mask file named in the .expt does not exist") from None
    except ModuleNotFoundError:
        raise InputError(
            f"{path}: DIALS mask pickles need cctbx to read (pip install cctbx-base); or give "
            "the same regions as untrusted regions in the config"
        ) from None
    except Exception as e:  # corrupt pickle
        raise InputError(f"{path}: cannot read DIALS mask ({e})") from None
    arr = obj[0] if isinstance(obj, tuple | list) else obj
    arr = np.asarray(arr.as_numpy_array() if hasattr(arr, "as_numpy_array") else arr, bool)
    if arr.shape != tuple(shape):
        raise InputError(f"{path}: mask shape {arr.shape} does not match the panel {shape}")
    return ~arr


# ------------------------------------------------------------------------------------------
# raw readers


def _read_fabio(path: str) -> np.ndarray:
    import logging

    import fabio

    # fabio logs its own complaints (e.g. checksum mismatches) before raising; we report once
    logging.getLogger("fabio").setLevel(logging.CRITICAL)

    if not os.path.exists(path):
        raise InputError(f"{path}: image file not found")
    try:
        img = fabio.open(path)
        data = img.data
    except Exception as e:  # fabio raises many types for damaged files
        msg = str(e).splitlines()[0] if str(e) else "truncated or corrupt file"
        raise InputError(f"{path}: cannot read image ({msg})") from None
    if data is None:
        raise InputError(f"{path}: cannot read image (no data)")
    return data


class _Hdf5Stack:
    """Frames of an Eiger/NeXus master file: /entry/data/data_NNNNNN blocks or /entry/data/data."""

    def __init__(self, path: str):
        import h5py
        import hdf5plugin  # noqa: F401 - registers bitshuffle/LZ4 and friends

        if not os.path.exists(path):
            raise InputError(f"{path}: image file not found")
        try:
            self.file = h5py.File(path, "r")
        except OSError as e:
            raise InputError(f"{path}: cannot open HDF5 file ({e})") from None
        self.path = path
        grp = self.file.get("entry/data")
        if grp is None:
            raise InputError(f"{path}: no /entry/data group (not an Eiger/NeXus master file)")
        names = sorted(k for k in grp if re.fullmatch(r"data_\d+", k))
        if not names and "data" in grp:
            names = ["data"]
        if not names:
            raise InputError(f"{path}: /entry/data holds no image datasets")
        self.blocks = []
        for n in names:
            try:
                ds = grp[n]
            except KeyError:
                raise InputError(f"{path}: /entry/data/{n} links to a missing file") from None
            self.blocks.append(ds)
        self.starts = np.cumsum([0] + [b.shape[0] for b in self.blocks])
        pm = self.file.get("entry/instrument/detector/pixel_mask")
        self.pixel_mask = None if pm is None else np.asarray(pm[()]) != 0

    def read(self, index: int) -> np.ndarray:
        if not 0 <= index < self.starts[-1]:
            raise InputError(f"{self.path}: has {self.starts[-1]} frames, no frame {index + 1}")
        b = int(np.searchsorted(self.starts, index, side="right") - 1)
        try:
            return self.blocks[b][index - self.starts[b]]
        except OSError as e:
            raise InputError(f"{self.path}: cannot read frame {index + 1} ({e})") from None


class FrameReader:
    """Reads frames of an experiment's image sequence as int32 with -1 for invalid pixels."""

    def __init__(self, expt: Experiment, untrusted: list[Region] | None = None):
        if expt.images is None:
            raise InputError(f"{expt.path}: experiment has no imageset")
        self.expt = expt
        self.source = expt.images
        self.shape = expt.panel.shape
        self.first = expt.scan.image_range[0]
        self.n_frames = expt.scan.num_images
        lo, hi = expt.panel.trusted_range
        # integer bounds of the inclusive trusted range
        self.lo, self.hi = int(np.ceil(lo)), int(np.floor(hi))
        fmt_path = self.source.template if self.source.single_file else self.path_of(0)
        self.format = image_format(fmt_path)
        self._h5 = _Hdf5Stack(self.source.template) if self.format == "hdf5" else None
        self.static_invalid = self._static_invalid(untrusted or [])

    def path_of(self, index: int) -> str:
        return self.source.path_for(self.first + index)

    def _static_invalid(self, untrusted: list[Region]) -> np.ndarray:
        m = np.zeros(self.shape, bool)
        for f0, s0, f1, s1 in self.expt.panel.mask_rectangles:
            m[s0:s1, f0:f1] = True
        if self.source.mask_file:
            m |= _load_dials_mask(self.source.mask_file, self.shape)
        if self._h5 is not None and self._h5.pixel_mask is not None:
            if self._h5.pixel_mask.shape != self.shape:
                raise InputError(f"{self.source.template}: pixel_mask shape does not match panel")
            m |= self._h5.pixel_mask
        for r in untrusted:
            m |= r.mask(self.shape)
        return m

    def read_raw(self, index: int) -> np.ndarray:
        """Frame ``index`` (0-based within the scan) as stored in the file."""
        if self._h5 is not None:
            data = self._h5.read(self.first + index - 1)
            where = f"{self.source.template} frame {self.first + index}"
        else:
            where = self.path_of(index)
            data = _read_fabio(where)
        if data.shape != self.shape:
            raise InputError(
                f"{where}: image size {data.shape[1]}x{data.shape[0]} (fast x slow) does not "
                f"match the detector's {self.shape[1]}x{self.shape[0]}"
            )
        return data

    def read(self, index: int, out: np.ndarray | None = None) -> np.ndarray:
        """Frame ``index`` as int32, -1 where invalid (written into ``out`` if given)."""
        raw = np.ascontiguousarray(self.read_raw(index))
        out = np.empty(self.shape, np.int32) if out is None else out
        lo, hi = max(self.lo, -(2**31)), min(self.hi, 2**31 - 1)
        if raw.dtype.kind not in "iu":
            raise InputError(f"{self.path_of(index)}: pixel type {raw.dtype} is not integer")
        _to_int32_marked(raw, self.static_invalid, lo, hi, out)
        return out


class DxtbxFrameReader(FrameReader):
    """Frames through dxtbx's own format classes and masks, for users who have DIALS.

    Used only when asked for (``import_data.py --reader dxtbx``) and importable; the built-in
    readers need no DIALS. dxtbx's per-image mask (static gaps, trusted range, DIALS masks)
    replaces the built-in one; untrusted regions are still applied on top.
    """

    def __init__(self, expt: Experiment, untrusted: list[Region] | None = None):
        try:
            from dxtbx.model.experiment_list import ExperimentListFactory
        except ImportError:
            raise InputError(
                "--reader dxtbx: dxtbx is not importable in this environment (it is not on "
                "PyPI; use conda-forge, e.g. envs/dxtbx.yaml), or use the built-in reader"
            ) from None
        try:
            experiments = ExperimentListFactory.from_json_file(str(expt.path), check_format=True)
        except Exception as e:  # dxtbx raises many types for unreadable files
            raise InputError(f"{expt.path}: dxtbx cannot load it ({e})") from None
        self.imageset = experiments[0].imageset
        self.expt = expt
        self.shape = expt.panel.shape
        self.n_frames = expt.scan.num_images
        self.format = "dxtbx"
        self.static_invalid = np.zeros(self.shape, bool)
        for r in untrusted or []:
            self.static_invalid |= r.mask(self.shape)

    def read(self, index: int, out: np.ndarray | None = None) -> np.ndarray:
        raw = self.imageset.get_raw_data(index)
        good = self.imageset.get_mask(index)
        if len(raw) != 1:
            raise InputError(f"{self.expt.path}: dxtbx returned {len(raw)} panels; need one")
        data = raw[0].as_numpy_array()
        invalid = ~good[0].as_numpy_array() | self.static_invalid
        out = np.empty(self.shape, np.int32) if out is None else out
        out[...] = data
        out[invalid] = INVALID
        return out


def frame_reader(expt: Experiment, untrusted=None, reader: str = "builtin") -> FrameReader:
    """The built-in reader, or dxtbx's when asked for."""
    if reader == "dxtbx":
        return DxtbxFrameReader(expt, untrusted)
    if reader != "builtin":
        raise InputError(f"--reader must be 'builtin' or 'dxtbx', is {reader!r}")
    return FrameReader(expt, untrusted)
