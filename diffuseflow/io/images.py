"""Image readers: CBF and SMV through fabio, Eiger/NeXus HDF5 through h5py + hdf5plugin.

Every frame comes out as int32 in the panel's (slow, fast) shape, with invalid pixels set to
-1: values outside the panel's trusted range (inclusive, as in dxtbx >= 3.12), the panel's
static mask rectangles (module gaps), a DIALS mask file when one is given, an Eiger pixel
mask, and untrusted regions from the user (DIALS' ``untrusted.circle``/``rectangle``).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import sys
import threading
from dataclasses import dataclass

import numpy as np
from numba import njit

from diffuseflow.errors import InputError
from diffuseflow.io import nexus
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


@njit(cache=True, nogil=True)
def count_invalid(frame):
    """Negative (invalid) pixels of an int32 frame: one pass, no temporary (the import log)."""
    n = 0
    for v in frame.ravel():
        n += v < 0
    return n


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


class _FabioComplaints(logging.Handler):
    """fabio logs what it finds wrong (e.g. a CBF whose binary section no longer matches its
    Content-MD5) instead of raising: collect those records per thread, print none of them."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.by_thread: dict[int, list[str]] = {}

    def emit(self, record):
        self.by_thread.setdefault(record.thread, []).append(record.getMessage())

    def take(self) -> list[str]:
        return self.by_thread.pop(threading.get_ident(), [])


_COMPLAINTS = _FabioComplaints()


def _fabio_logger():
    log = logging.getLogger("fabio")
    if _COMPLAINTS not in log.handlers:
        log.addHandler(_COMPLAINTS)
        log.propagate = False  # reported once, by us, as one line
        log.setLevel(logging.ERROR)


def _read_fabio(path: str) -> np.ndarray:
    import fabio

    _fabio_logger()
    if not os.path.exists(path):
        raise InputError(f"{path}: image file not found")
    if os.path.getsize(path) == 0:
        raise InputError(f"{path}: empty image file (0 bytes)")
    _COMPLAINTS.take()
    try:
        img = fabio.open(path)
        data = img.data
    except Exception as e:  # fabio raises many types for damaged files
        msg = str(e).splitlines()[0] if str(e) else "truncated or corrupt file"
        raise InputError(f"{path}: cannot read image ({msg})") from None
    finally:
        complaints = _COMPLAINTS.take()
    checksum = [c for c in complaints if "checksum" in c.lower() or "md5" in c.lower()]
    if checksum:
        raise InputError(
            f"{path}: corrupt image: its binary data do not match the header's Content-MD5"
        )
    if data is None:
        raise InputError(f"{path}: cannot read image (no data)")
    return data


def _warn(message: str):
    print(f"warning: {message}", file=sys.stderr, flush=True)


class _Hdf5Stack:
    """Frames of an Eiger/NeXus master file, as detectors and beamline software write them.

    Image data: ``/entry/data/data_NNNNNN`` blocks (external links to data files, in order;
    a data file that moved with its master is found beside it) or ``/entry/data/data``
    (plain, or a virtual dataset whose source files must exist: HDF5 silently reads a missing
    source as fill values). A 4-D ``data`` (image, threshold channel, y, x; the DECTRIS 2024
    writer) is read at one channel. Pixel masks: ``detector/pixel_mask``,
    ``detectorSpecific/pixel_mask`` and the channel's ``threshold_K_channel/pixel_mask``,
    also behind external links (nexgen's ``_meta.h5``); non-zero = invalid. Bit depth:
    ``bit_depth_image`` (detector, detectorSpecific, or linked), else the data type; the two
    top values 2^depth - 1 (gaps, dead) and 2^depth - 2 (hot) are the detector's markers.
    """

    DETECTOR = "entry/instrument/detector"

    def __init__(self, path: str, threshold_channel: int = 1):
        import h5py
        import hdf5plugin  # noqa: F401 - registers bitshuffle/LZ4 and friends

        if not os.path.exists(path):
            raise InputError(f"{path}: image file not found")
        try:
            self.file = h5py.File(path, "r")
        except OSError as e:
            raise InputError(f"{path}: cannot open HDF5 file ({e})") from None
        self.path = path
        self.folder = os.path.dirname(os.path.abspath(path))
        self._open = []  # data files opened by hand (links resolved beside the master)
        self.channel = None
        grp = self.file.get("entry/data", getlink=False)
        if not isinstance(grp, h5py.Group):
            raise InputError(f"{path}: no /entry/data group (not an Eiger/NeXus master file)")
        names = sorted(k for k in grp if re.fullmatch(r"data_\d+", k))
        if names:
            self.blocks = [self._linked_dataset(grp, n) for n in names]
        elif "data" in grp:
            self.blocks = [self._linked_dataset(grp, "data")]
        else:
            raise InputError(f"{path}: /entry/data holds no image datasets")
        self.ndim = self.blocks[0].ndim
        if self.ndim == 4:
            self.channel = self._pick_channel(grp, threshold_channel)
        elif self.ndim == 3 and threshold_channel != 1:
            raise InputError(
                f"{path}: holds one threshold channel; threshold_channel {threshold_channel} "
                "does not exist"
            )
        elif self.ndim != 3:
            raise InputError(
                f"{path}: /entry/data holds {self.ndim}-D images; expected (image, y, x) or "
                "(image, threshold channel, y, x)"
            )
        self.starts = np.cumsum([0] + [b.shape[0] for b in self.blocks])
        # one whole frame per bitshuffle/LZ4 chunk: how Eiger detectors and the DECTRIS,
        # Diamond and nexgen writers store frames
        self._direct = [nexus.whole_frame_chunks(b) for b in self.blocks]
        self.dtype = self.blocks[0].dtype
        self.bit_depth = self._bit_depth()
        self.pixel_mask = self._pixel_mask()

    # -- locating things ------------------------------------------------------------------

    def _candidates(self, filename: str) -> list[str]:
        name = os.path.expandvars(filename)
        found = [name] if os.path.isabs(name) else []
        found.append(os.path.join(self.folder, name))
        found.append(os.path.join(self.folder, os.path.basename(name)))
        return found

    def _external(self, link, where: str):
        """The object an external link points to, opened by hand (beside the master if the
        link's own path does not exist); a missing target is an error naming it."""
        import h5py

        for candidate in self._candidates(link.filename):
            if os.path.exists(candidate):
                try:
                    f = h5py.File(candidate, "r")
                except OSError as e:
                    raise InputError(f"{candidate}: cannot open HDF5 file ({e})") from None
                self._open.append(f)
                obj = f.get(link.path)
                if obj is None:
                    raise InputError(
                        f"{self.path}: {where} links to {link.path} in {candidate}, which has "
                        "no such object"
                    )
                return obj
        raise InputError(
            f"{self.path}: {where} links to {link.filename}, which does not exist (looked "
            f"beside the master in {self.folder})"
        )

    def _get(self, where: str):
        """Object at ``where`` (following external links by hand), or None if absent."""
        import h5py

        parent, _, name = where.rpartition("/")
        grp = self.file.get(parent) if parent else self.file
        if grp is None or name not in grp:
            return None
        link = grp.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            return self._external(link, "/" + where)
        try:
            return grp[name]
        except KeyError:  # a soft link to nowhere
            raise InputError(f"{self.path}: /{where} is a broken link") from None

    def _linked_dataset(self, grp, name):
        import h5py

        link = grp.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            ds = self._external(link, f"/entry/data/{name}")
        else:
            ds = grp[name]
        if not isinstance(ds, h5py.Dataset):
            raise InputError(f"{self.path}: /entry/data/{name} is not a dataset")
        if ds.is_virtual:
            self._check_virtual_sources(ds, f"/entry/data/{name}")
        return ds

    def _check_virtual_sources(self, ds, where):
        missing = []
        for vs in ds.virtual_sources():
            if vs.file_name in (".", ""):
                continue
            if not any(os.path.exists(c) for c in self._candidates(vs.file_name)):
                missing.append(vs.file_name)
        if missing:
            names = ", ".join(sorted(set(missing)))
            raise InputError(
                f"{self.path}: {where} is a virtual dataset over {names}, "
                f"which does not exist (looked beside the master in {self.folder}); HDF5 would "
                "read those frames as zeros"
            )

    def _pick_channel(self, grp, k: int) -> int:
        n = self.blocks[0].shape[1]
        names = None
        if "channel" in grp:
            names = [v.decode() if isinstance(v, bytes) else str(v) for v in grp["channel"][()]]
        if not 1 <= k <= n:
            listed = f" ({', '.join(names)})" if names else ""
            raise InputError(
                f"{self.path}: /entry/data/data has {n} threshold channels{listed}; "
                f"threshold_channel {k} does not exist (1..{n})"
            )
        self.channel_name = names[k - 1] if names else f"threshold_{k}"
        return k - 1

    # -- detector metadata ------------------------------------------------------------------

    def _bit_depth(self) -> int:
        for where in (
            f"{self.DETECTOR}/bit_depth_image",
            f"{self.DETECTOR}/detectorSpecific/bit_depth_image",
        ):
            obj = self._get(where)
            if obj is not None:
                try:
                    depth = int(np.asarray(obj[()]).ravel()[0])
                except (TypeError, ValueError, IndexError):
                    raise InputError(f"{self.path}: /{where} is not an integer") from None
                if not 1 <= depth <= 64:
                    raise InputError(f"{self.path}: /{where} = {depth} is not a bit depth")
                return depth
        return self.dtype.itemsize * 8

    def _pixel_mask(self) -> np.ndarray | None:
        places = [f"{self.DETECTOR}/pixel_mask", f"{self.DETECTOR}/detectorSpecific/pixel_mask"]
        if self.channel is not None:
            places.insert(0, f"{self.DETECTOR}/{self.channel_name}_channel/pixel_mask")
        mask = None
        for where in places:
            obj = self._get(where)
            if obj is None:
                continue
            m = np.asarray(obj[()])
            while m.ndim > 2 and m.shape[0] == 1:
                m = m[0]
            if m.ndim != 2:
                raise InputError(f"{self.path}: /{where} has shape {m.shape}; expected (y, x)")
            shape = self.frame_shape
            if m.shape != shape and m.shape[::-1] == shape:
                # legacy Diamond masters stored (x, y); dxtbx reads them transposed too
                _warn(f"{self.path}: /{where} is stored transposed {m.shape}; transposing it")
                m = m.T
            if m.shape != shape:
                raise InputError(
                    f"{self.path}: /{where} has shape {m.shape}, the images {tuple(shape)}"
                )
            mask = (m != 0) if mask is None else (mask | (m != 0))
        return mask

    @property
    def marker_floor(self) -> int | None:
        """Smallest detector marker value (2^depth - 2) of unsigned data, else None."""
        if self.dtype.kind != "u":
            return None
        return 2**self.bit_depth - 2

    @property
    def frame_shape(self) -> tuple[int, int]:
        return tuple(self.blocks[0].shape[-2:])

    def read(self, index: int) -> np.ndarray:
        if not 0 <= index < self.starts[-1]:
            raise InputError(f"{self.path}: has {self.starts[-1]} frames, no frame {index + 1}")
        b = int(np.searchsorted(self.starts, index, side="right") - 1)
        block, k = self.blocks[b], index - self.starts[b]
        if self._direct[b]:
            # the frame's chunk through bitshuffle's decoder, which releases the GIL: the
            # import's reader threads then decode frames in parallel, where HDF5's filter
            # pipeline (below) decodes one chunk at a time for the whole process
            return nexus.read_frame(block, k)
        try:
            if self.channel is not None:
                return block[k, self.channel]
            return block[k]
        except OSError as e:
            raise InputError(f"{self.path}: cannot read frame {index + 1} ({e})") from None


class FrameReader:
    """Reads frames of an experiment's image sequence as int32 with -1 for invalid pixels."""

    def __init__(
        self,
        expt: Experiment,
        untrusted: list[Region] | None = None,
        threshold_channel: int = 1,
    ):
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
        self._h5 = None
        if self.format == "hdf5":
            self._h5 = _Hdf5Stack(self.source.template, threshold_channel)
            if self._h5.marker_floor is not None:
                # the detector's marker values (gaps, dead, hot pixels) are never counts,
                # whatever the .expt's trusted range says (DIALS 2.x: [-1, 65535])
                self.hi = min(self.hi, self._h5.marker_floor - 1)
        self.static_invalid = self._static_invalid(untrusted or [])

    def describe(self) -> str:
        """What the reader found, for the log: format, markers, masks."""
        text = f"{self.format} images, trusted counts {self.lo}..{self.hi}"
        h5 = self._h5
        if h5 is not None:
            text += f"; {len(h5.blocks)} data block(s) of {h5.dtype}, bit depth {h5.bit_depth}"
            if h5.channel is not None:
                text += f", channel {h5.channel_name}"
            if h5.pixel_mask is not None:
                text += f", pixel mask {int(h5.pixel_mask.sum())} px"
        return text + f"; {int(self.static_invalid.sum())} px invalid in every frame"

    def path_of(self, index: int) -> str:
        """File of image ``index`` (0-based in the scan). A per-image file archived as .gz or
        .bz2 beside its plain name (the .expt names the plain one) is read compressed."""
        path = self.source.path_for(self.first + index)
        if not self.source.single_file and not os.path.exists(path):
            for ext in _COMPRESSED:
                if os.path.exists(path + ext):
                    return path + ext
        return path

    def _static_invalid(self, untrusted: list[Region]) -> np.ndarray:
        m = np.zeros(self.shape, bool)
        for f0, s0, f1, s1 in self.expt.panel.mask_rectangles:
            m[s0:s1, f0:f1] = True
        if self.source.mask_file:
            m |= _load_dials_mask(self.source.mask_file, self.shape)
        if self._h5 is not None and self._h5.pixel_mask is not None:
            if self._h5.pixel_mask.shape != self.shape:
                raise InputError(
                    f"{self.source.template}: pixel_mask shape {self._h5.pixel_mask.shape} "
                    f"does not match the detector's {self.shape}"
                )
            m |= self._h5.pixel_mask
        for r in untrusted:
            m |= r.mask(self.shape)
        return m

    def read_raw(self, index: int) -> np.ndarray:
        """Frame ``index`` (0-based within the scan) as stored in the file."""
        if self._h5 is not None:
            data = self._h5.read(self.source.file_index(index))
            where = f"{self.source.template} frame {self.source.file_index(index) + 1}"
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
            why = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise InputError(f"{expt.path}: dxtbx cannot load it ({why})") from None
        self.imageset = experiments[expt.index].imageset
        # the selected frames start this many images into dxtbx's image set
        scan = self.imageset.get_scan() or experiments[expt.index].scan
        self.offset = expt.scan.image_range[0] - scan.get_image_range()[0]
        self.expt = expt
        self.shape = expt.panel.shape
        self.n_frames = expt.scan.num_images
        self.format = "dxtbx"
        self.static_invalid = np.zeros(self.shape, bool)
        for r in untrusted or []:
            self.static_invalid |= r.mask(self.shape)

    def describe(self) -> str:
        return f"images through dxtbx ({type(self.imageset).__name__})"

    def read(self, index: int, out: np.ndarray | None = None) -> np.ndarray:
        try:
            raw = self.imageset.get_raw_data(index + self.offset)
            good = self.imageset.get_mask(index + self.offset)
        except Exception as e:  # dxtbx raises RuntimeError, IOError, ... for unreadable images
            why = str(e).strip().splitlines()[-1] if str(e).strip() else "no message"
            raise InputError(
                f"{self.expt.path}: dxtbx cannot read image {index + 1} of the scan "
                f"({type(e).__name__}: {why})"
            ) from None
        if len(raw) != 1:
            raise InputError(f"{self.expt.path}: dxtbx returned {len(raw)} panels; need one")
        data = raw[0].as_numpy_array()
        invalid = ~good[0].as_numpy_array() | self.static_invalid
        out = np.empty(self.shape, np.int32) if out is None else out
        out[...] = data
        out[invalid] = INVALID
        return out


def frame_reader(
    expt: Experiment, untrusted=None, reader: str = "builtin", threshold_channel: int = 1
) -> FrameReader:
    """The built-in reader, or dxtbx's when asked for."""
    if reader == "dxtbx":
        return DxtbxFrameReader(expt, untrusted)
    if reader != "builtin":
        raise InputError(f"--reader must be 'builtin' or 'dxtbx', is {reader!r}")
    return FrameReader(expt, untrusted, threshold_channel)
