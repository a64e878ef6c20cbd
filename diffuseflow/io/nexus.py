"""NeXus files in mdx2 1.0.5's layouts (``mdx2-compat.md`` §2.2, §4), written with h5py.

Every file gets the root attribute ``mdx2_version`` (so mdx2's loader does not warn) and the
provenance of diffuseflow: version, program, parameters and input files.

Large arrays (image stacks, masks) are chunked and compressed with bitshuffle/LZ4 (the Eiger
codec, read through hdf5plugin; decodes ~3x faster than gzip) or gzip + shuffle (which every
HDF5 reader understands, plugins or not). Compression and decompression of whole slabs run in
a thread pool through HDF5's direct chunk I/O (both codecs release the GIL), so import and
reading scale with the cores instead of being bound by HDF5's single-threaded filter pipeline.

Outputs are written to a temporary name and renamed into place only on success, so a failed
run never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np

from diffuseflow import MDX2_VERSION, __version__
from diffuseflow.errors import InputError
from diffuseflow.io import bslz4, strong
from diffuseflow.io.shuffle import shuffle_chunk, unshuffle_chunk_into

try:  # ISA-L writes and reads the same zlib streams as zlib, 3-6x faster
    from isal import isal_zlib as _zlib

    _MAX_LEVEL = 3
except ImportError:  # pragma: no cover - isal is a dependency; keep working without it
    import zlib as _zlib

    _MAX_LEVEL = 9

GZIP_LEVEL = 1
#: codecs of the image and mask stacks (config key ``compression``); the first is the default
CODECS = ("bslz4", "gzip")


def _filters(dset: h5py.Dataset) -> list[int]:
    plist = dset.id.get_create_plist()
    return [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]


def _bitshuffle_lz4(dset: h5py.Dataset) -> bool:
    """Whether the dataset's bitshuffle filter compresses with LZ4: its values are (major,
    minor, element size, block size, compression[, level]) once HDF5 has set them up, and
    compression 2 is LZ4 (0: none, 3: zstd, which the chunk decoder does not read)."""
    plist = dset.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        fid, _, values, _ = plist.get_filter(i)
        if fid == bslz4.FILTER_ID:
            return len(values) >= 5 and values[4] == 2
    return False


def stack_codec(dset: h5py.Dataset, filters: list[int] | None = None) -> str | None:
    """'bslz4', 'gzip' (optionally after shuffle) or 'none' for the stacks this module writes
    and reads chunk by chunk; None for any other filter pipeline (read through HDF5).
    ``filters``: the dataset's filter ids, if already read."""
    filters = _filters(dset) if filters is None else filters
    if filters in ([bslz4.FILTER_ID], [bslz4.FILTER_ID, h5py.h5z.FILTER_FLETCHER32]):
        return "bslz4" if _bitshuffle_lz4(dset) else None
    if filters in ([h5py.h5z.FILTER_DEFLATE], [h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_DEFLATE]):
        return "gzip"
    if filters in ([], [h5py.h5z.FILTER_SHUFFLE]):
        return "none"
    return None


# ------------------------------------------------------------------------------------------
# files


TMP_TAG = ".tmp"


def _temp_name(path: Path, pid: int) -> Path:
    return path.with_name(f".{path.name}{TMP_TAG}{pid}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(path) -> list[Path]:
    """Remove the temporary files of ``path`` left by runs that were killed (kill -9, node
    failure): ``.NAME.tmpPID`` whose process no longer exists. Returns what was removed."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    prefix = f".{path.name}{TMP_TAG}"
    for tmp in path.parent.glob(f".{glob.escape(path.name)}{TMP_TAG}*"):
        pid = tmp.name[len(prefix) :]
        if pid.isdigit() and (int(pid) == os.getpid() or not _pid_alive(int(pid))):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def check_writable(path):
    """Refuse, before any work, an output that cannot be written: its folder cannot be made or
    is not writable, or the path is a folder."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{path}: cannot create its folder {parent} ({e.strerror})") from None
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an output file name")
    probe = _temp_name(path, os.getpid())
    try:  # the only test that holds for root, read-only mounts and quotas alike: try it
        with open(probe, "xb"):
            pass
    except FileExistsError:
        pass  # our own temporary file from this very process
    except OSError as e:
        raise InputError(f"{path}: cannot write here ({e.strerror})") from None
    else:
        probe.unlink()


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    The temporary file is removed on any failure; one left by a killed run is removed by the
    next run of the same output. A write that fails (disk full, file-size limit, I/O error)
    becomes one line naming the output."""
    path = Path(path)
    check_writable(path)
    remove_stale_temps(path)
    tmp = _temp_name(path, os.getpid())
    try:
        yield tmp
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and "errno =" not in str(e):
            raise  # not an I/O failure (HDF5 reports those as RuntimeError on close)
        reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
        errno = getattr(e, "errno", None)
        if "errno = 28" in str(e) or errno == 28:
            reason = "no space left on device"
        elif "errno = 27" in str(e) or errno == 27:
            reason = "file too large for this file system or limit"
        raise InputError(f"{path}: could not be written ({reason}); nothing was left") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def describe_inputs(paths) -> list[dict]:
    """Input files for provenance: absolute path and size (contents of big files are not hashed)."""
    out = []
    for p in paths:
        p = Path(p)
        out.append({"path": str(p.resolve()), "bytes": p.stat().st_size if p.exists() else None})
    return out


#: root attribute: which sweep (images, frames, shape, rotation) a file was made from
SWEEP_ATTR = "diffuseflow_sweep"


def sweep_record(expt) -> dict:
    """The identity of a sweep's images: where they are (the resolved template: two crystals
    collected with the same file names in two folders differ), frames, stack shape and
    rotation. Files made from the same images carry the same record, whatever their
    parameters."""
    template = expt.images.template if expt.images is not None else ""
    n = expt.scan.num_images
    return {
        "images": template,
        "frames": [int(v) for v in expt.scan.image_range],
        "shape": [n, *(int(v) for v in expt.panel.shape)],
        "phi": [round(float(expt.scan.phi_start), 9), round(float(expt.scan.phi_width), 9)],
    }


def sweep_of(path) -> dict | None:
    """The sweep record of a diffuseflow file (None for files without one, e.g. mdx2's)."""
    try:
        with h5py.File(path, "r") as f:
            text = f.attrs.get(SWEEP_ATTR)
    except OSError:
        return None
    return json.loads(text) if text else None


def _describe_sweep(rec: dict) -> str:
    a, b = rec["frames"]
    return f"{rec['images']} images {a}-{b}, {'x'.join(map(str, rec['shape']))}"


def check_same_sweep(files: dict):
    """Refuse input files that were made from different sweeps, naming both: {role: path}."""
    seen = None
    for role, path in files.items():
        if path is None:
            continue
        rec = sweep_of(path)
        if rec is None:
            continue
        if seen is None:
            seen = (role, path, rec)
        elif rec != seen[2]:
            raise InputError(
                f"{path} ({role}) and {seen[1]} ({seen[0]}) come from different sweeps "
                f"({_describe_sweep(rec)} vs {_describe_sweep(seen[2])})"
            )


@contextlib.contextmanager
def new_file(
    path, program: str, parameters: dict, inputs=(), sweep: dict | None = None, streamed=False
):
    """Create a NeXus file with /entry, the provenance attributes and the sweep record; a
    context manager yielding the open h5py.File.

    A file that is not ``streamed`` (everything but the image and mask stacks, which are
    written chunk by chunk as they are made) is built in memory and written to ``path`` in one
    plain write when the block ends: HDF5 writes a small file's data and metadata when it
    closes it, and a close that hits a full disk or a file-size limit crashes the process
    (h5py 3.16 / HDF5 1.14: segmentation fault, measured), where a plain write raises OSError
    (``atomic_output`` turns that into one line). A stack's chunks are written at once, so a
    full disk stops its writer at the failing chunk."""
    if streamed:
        with h5py.File(path, "w", track_order=True) as f:
            _provenance(f, program, parameters, inputs, sweep)
            yield f
        return
    f = h5py.File(path, "w", driver="core", backing_store=False, track_order=True)
    try:
        _provenance(f, program, parameters, inputs, sweep)
        yield f
        f.flush()
        image = f.id.get_file_image()
    finally:
        f.close()
    with open(path, "wb") as fh:
        fh.write(image)


def _provenance(f: h5py.File, program, parameters, inputs, sweep):
    if sweep is not None:
        f.attrs[SWEEP_ATTR] = json.dumps(sweep, sort_keys=True)
    f.attrs["mdx2_version"] = MDX2_VERSION
    f.attrs["diffuseflow_version"] = __version__
    f.attrs["diffuseflow_program"] = program
    f.attrs["diffuseflow_parameters"] = json.dumps(parameters, sort_keys=True, default=str)
    f.attrs["diffuseflow_inputs"] = json.dumps(describe_inputs(inputs))
    entry = f.create_group("entry")
    entry.attrs["NX_class"] = "NXentry"


def provenance(path) -> dict:
    """Provenance attributes of a diffuseflow file (version, program, parameters, inputs)."""
    with h5py.File(path, "r") as f:
        a = f.attrs
        return {
            "version": a.get("diffuseflow_version"),
            "program": a.get("diffuseflow_program"),
            "parameters": json.loads(a.get("diffuseflow_parameters", "{}")),
            "inputs": json.loads(a.get("diffuseflow_inputs", "[]")),
        }


def open_input(path, what: str, groups=()) -> h5py.File:
    """Open an input .nxs file, checking that it holds the mdx2 groups we need."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file (expected {what})")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise InputError(f"{path}: not an HDF5/NeXus file (expected {what})") from None
    for g in groups:
        if f"entry/{g}" not in f:
            f.close()
            raise InputError(f"{path}: no /entry/{g} group; is this {what}?")
    return f


def mdx2_group(parent: h5py.Group, name: str, module: str, cls: str, nx_class=None):
    g = parent.create_group(name)
    if nx_class:
        g.attrs["NX_class"] = nx_class
    g.attrs["mdx2_module"] = module
    g.attrs["mdx2_class"] = cls
    return g


def str_array(names):
    return np.array(names, dtype=h5py.string_dtype())


def nxdata(parent, name, signal, axes: dict, module="mdx2.geometry", cls=None, **extra):
    """An NXdata group with @signal/@axes (plottable in NeXpy); mdx2 GridData layout."""
    g = (
        mdx2_group(parent, name, module, cls, nx_class="NXdata")
        if cls
        else parent.create_group(name)
    )
    if not cls:
        g.attrs["NX_class"] = "NXdata"
    g.attrs["signal"] = "signal"
    g.attrs["axes"] = str_array(list(axes))
    kw = {}
    if np.ndim(signal) >= 2 and np.size(signal) > 4096:
        kw = dict(compression="gzip", compression_opts=4, shuffle=True, chunks=True)
    g.create_dataset("signal", data=signal, **kw)
    for ax, vals in axes.items():
        g.create_dataset(ax, data=np.asarray(vals, float))
    for k, v in extra.items():
        g.create_dataset(k, data=v, **(kw if np.ndim(v) >= 2 else {}))
    return g


# ------------------------------------------------------------------------------------------
# chunked stacks with threaded compression


class StackWriter:
    """Writes a (frames, ny, nx) dataset slab by slab, compressing chunks in parallel threads.

    Slabs must start on a chunk boundary along the frame axis (every slab but the last must be
    a whole number of frame-chunks), which is how the import and mask steps produce them.
    """

    def __init__(self, dset: h5py.Dataset, threads: int = 1):
        self.dset = dset
        self.chunks = dset.chunks
        filters = _filters(dset)
        self.codec = stack_codec(dset, filters)
        self.checksum = h5py.h5z.FILTER_FLETCHER32 in filters
        if self.codec is None:
            raise ValueError(f"{dset.name}: a stack needs bslz4, gzip or no compression")
        self.shuffle = bool(dset.shuffle)
        self.level = dset.compression_opts if self.codec == "gzip" else None
        self.pool = ThreadPoolExecutor(max(1, threads)) if threads > 1 else None

    def write(self, start: int, slab: np.ndarray):
        cf, cy, cx = self.chunks
        nf, ny, nx = slab.shape
        if start % cf:
            raise ValueError("slab must start on a frame-chunk boundary")
        tasks = []
        for f0 in range(0, nf, cf):
            for y0 in range(0, ny, cy):
                for x0 in range(0, nx, cx):
                    tasks.append((f0, y0, x0))

        def encode(t):
            f0, y0, x0 = t
            if self.codec == "bslz4":
                return bslz4.encode(padded_block(slab, f0, y0, x0, (cf, cy, cx)), self.checksum)
            if self.shuffle:
                buf = shuffle_chunk(slab, f0, y0, x0, (cf, cy, cx))
            else:
                block = padded_block(slab, f0, y0, x0, (cf, cy, cx))
                buf = np.ascontiguousarray(block).reshape(-1).view(np.uint8)
            if self.level is None:
                return bytes(buf)
            return _zlib.compress(buf, min(self.level, _MAX_LEVEL))

        encoded = self.pool.map(encode, tasks) if self.pool else map(encode, tasks)
        for (f0, y0, x0), data in zip(tasks, encoded, strict=True):
            self.dset.id.write_direct_chunk((start + f0, y0, x0), data)

    def close(self):
        if self.pool:
            self.pool.shutdown()


def padded_block(slab: np.ndarray, f0, y0, x0, chunks) -> np.ndarray:
    """The chunk of ``slab`` at (f0, y0, x0); HDF5 stores edge chunks zero-padded to full size."""
    cf, cy, cx = chunks
    block = slab[f0 : f0 + cf, y0 : y0 + cy, x0 : x0 + cx]
    if block.shape != (cf, cy, cx):
        full = np.zeros((cf, cy, cx), slab.dtype)
        full[: block.shape[0], : block.shape[1], : block.shape[2]] = block
        block = full
    return block


def create_stack(group, name, shape, dtype, chunks, codec=CODECS[0], fill=None):
    """A chunked (frames, ny, nx) stack for ``StackWriter``; codec 'bslz4' or 'gzip'."""
    chunks = tuple(int(min(c, s)) for c, s in zip(chunks, shape, strict=True))
    if codec == "bslz4":
        filters = bslz4.filter_options()
    elif codec == "gzip":  # bytes of a bool mask need no shuffle
        filters = dict(
            compression="gzip", compression_opts=GZIP_LEVEL, shuffle=np.dtype(dtype).itemsize > 1
        )
    else:
        raise InputError(f"compression must be one of {', '.join(CODECS)}, is {codec!r}")
    return group.create_dataset(
        name, shape=shape, dtype=dtype, chunks=chunks, fillvalue=fill, **filters
    )


def read_slab(
    dset: h5py.Dataset, start: int, stop: int, pool: ThreadPoolExecutor | None = None, out=None
):
    """Frames [start, stop) of a stack. bslz4 and gzip(+shuffle) chunks are decoded in
    parallel threads.
    ``out``: an array of the slab's shape and dtype to fill (a reused buffer: a fresh one costs
    page faults on first touch, ~40 % of a frame's decode)."""
    filters = _filters(dset)
    codec = stack_codec(dset, filters)
    direct = (
        dset.chunks is not None
        and not dset.is_virtual
        and codec is not None
        and start % dset.chunks[0] == 0
        and (stop % dset.chunks[0] == 0 or stop == dset.shape[0])
    )
    if not direct:
        try:
            if out is not None:
                dset.read_direct(out, np.s_[start:stop])
                return out
            return dset[start:stop]
        except OSError as e:
            raise InputError(
                f"{dset.file.filename}: cannot read frames {start}-{stop - 1} of {dset.name}: "
                f"a compressed chunk is corrupt or its filter is missing ({str(e).splitlines()[0]})"
            ) from None
    cf, cy, cx = dset.chunks
    _, ny, nx = dset.shape
    if out is None or out.shape != (stop - start, ny, nx) or out.dtype != dset.dtype:
        out = np.empty((stop - start, ny, nx), dset.dtype)
    checksum = h5py.h5z.FILTER_FLETCHER32 in filters
    shuffle = bool(dset.shuffle)
    fill = dset.fillvalue
    tasks = [
        (f0, y0, x0)
        for f0 in range(start, stop, cf)
        for y0 in range(0, ny, cy)
        for x0 in range(0, nx, cx)
    ]

    def decode(t):
        try:
            _decode(t)
        except InputError:
            raise
        except Exception as e:  # a damaged chunk: zlib/ISA-L errors, bad lengths
            raise _corrupt(dset, t, e) from None

    def _decode(t):
        f0, y0, x0 = t
        nf_, ny_, nx_ = min(cf, stop - f0), min(cy, ny - y0), min(cx, nx - x0)
        if dset.id.get_chunk_info_by_coord((f0, y0, x0)).byte_offset is None:
            block = np.full((cf, cy, cx), fill, dset.dtype)  # never written: fill value
        else:
            # filter_mask bit i set = filter i was skipped (HDF5 skips optional filters that
            # fail to shrink a chunk); gzip's pipeline is shuffle (if any), then deflate.
            mask, buf = dset.id.read_direct_chunk((f0, y0, x0))
            if codec == "bslz4" and not mask & 1:
                values = bslz4.decode(buf, dset.dtype, cf * cy * cx, checksum and not mask & 2)
                block = values.reshape(cf, cy, cx)
            else:
                deflate_bit = 1 << (1 if shuffle else 0)
                if codec == "gzip" and not mask & deflate_bit:
                    buf = _zlib.decompress(buf)
                if len(buf) != cf * cy * cx * out.itemsize:
                    raise ValueError(
                        f"decodes to {len(buf)} bytes, not {cf * cy * cx * out.itemsize}"
                    )
                if shuffle and not mask & 1 and out.itemsize > 1:
                    unshuffle_chunk_into(buf, out, f0 - start, y0, x0, (cf, cy, cx), nf_, ny_, nx_)
                    return
                block = np.frombuffer(buf, dset.dtype).reshape(cf, cy, cx)
        out[f0 - start : f0 - start + nf_, y0 : y0 + ny_, x0 : x0 + nx_] = block[:nf_, :ny_, :nx_]

    if pool is None:
        for t in tasks:
            decode(t)
    else:
        list(pool.map(decode, tasks))
    return out


def _corrupt(dset: h5py.Dataset, offset, e: Exception) -> InputError:
    f0, y0, x0 = offset
    return InputError(
        f"{dset.file.filename}: the compressed chunk at frame {f0 + 1}, row {y0 + 1}, "
        f"column {x0 + 1} (from 1) of {dset.name} is corrupt ({type(e).__name__}: {e})"
    )


def whole_frame_chunks(dset: h5py.Dataset) -> bool:
    """A bitshuffle/LZ4 stack stored one whole frame per chunk (as Eiger data files are)."""
    return (
        dset.ndim == 3
        and not dset.is_virtual
        and dset.chunks == (1, *dset.shape[1:])
        and stack_codec(dset) == "bslz4"
    )


def read_frame(dset: h5py.Dataset, k: int) -> np.ndarray:
    """Frame k of a ``whole_frame_chunks`` stack, decoded straight from its chunk (no copy
    into a slab; bitshuffle releases the GIL, so threads decode frames in parallel)."""
    ny, nx = dset.shape[1:]
    try:
        if dset.id.get_chunk_info_by_coord((k, 0, 0)).byte_offset is None:
            return np.full((ny, nx), dset.fillvalue, dset.dtype)  # never written
        mask, buf = dset.id.read_direct_chunk((k, 0, 0))
        if mask & 1:  # stored unfiltered (HDF5 skips an optional filter that did not shrink it)
            if len(buf) != ny * nx * dset.dtype.itemsize:
                raise ValueError(f"holds {len(buf)} bytes, not {ny * nx * dset.dtype.itemsize}")
            return np.frombuffer(buf, dset.dtype).reshape(ny, nx)
        checksum = h5py.h5z.FILTER_FLETCHER32 in _filters(dset) and not mask & 2
        return bslz4.decode(buf, dset.dtype, ny * nx, checksum).reshape(ny, nx)
    except Exception as e:  # a damaged chunk: bad lengths, LZ4 errors, checksum
        raise _corrupt(dset, (k, 0, 0), e) from None


def job_frames(n_frames: int, frames_per_chunk: int, job: int, n_jobs: int) -> tuple[int, int]:
    """Frames [start, stop) of slab job ``job`` of ``n_jobs``: whole frame-chunks, spread as
    evenly as possible, so every job writes whole chunks and the gather step can copy them.
    With fewer chunks than jobs some jobs get no frames (start == stop)."""
    if not 0 <= job < n_jobs:
        raise InputError(f"slab job {job} of {n_jobs}: the job index must be in 0-{n_jobs - 1}")
    n_chunks = -(-n_frames // frames_per_chunk)
    lo, hi = job * n_chunks // n_jobs, (job + 1) * n_chunks // n_jobs
    return min(lo * frames_per_chunk, n_frames), min(hi * frames_per_chunk, n_frames)


def mark_partial(f: h5py.File, frames: tuple[int, int], job: tuple[int, int]):
    """Tag a file written by one slab job: its frames and which job of how many."""
    f.attrs["diffuseflow_partial_frames"] = np.asarray(frames, np.int64)
    f.attrs["diffuseflow_partial_job"] = np.asarray(job, np.int64)


#: the chunked stacks a slab job writes part of
STACKS = ("entry/image_series/data", "entry/mask/signal")


def gather_partials(parts, outfile, expect: dict | None = None):
    """Assemble the partial files of one sweep (written by slab jobs) into one file.

    Every part holds the full-shape stack with only its own frames' chunks written; the first
    part is copied whole (HDF5 copies chunks without decoding) and the other parts' chunks are
    moved raw (read_direct_chunk -> write_direct_chunk: no recompression), so the result is
    the file a single job would have written, chunk for chunk. Per-frame mask counts add up.
    ``expect``: parameters every part must have been made with (stale parts are refused).
    """
    check_same_sweep({f"part {k}": p for k, p in enumerate(parts)})
    opened = []
    try:
        for p in parts:
            f = open_input(p, "a partial file from a slab job")
            opened.append(f)
            if "diffuseflow_partial_frames" not in f.attrs:
                raise InputError(f"{p}: not a partial file from a slab job (--slab)")
            made_with = json.loads(f.attrs.get("diffuseflow_parameters", "{}"))
            for key, want in (expect or {}).items():
                if made_with.get(key) != want:
                    raise InputError(
                        f"{p}: made with {key}={made_with.get(key)!r}, not {want!r}; "
                        "rerun its slab job"
                    )
        opened.sort(key=lambda f: int(f.attrs["diffuseflow_partial_frames"][0]))
        stack = next((s for s in STACKS if s in opened[0]), None)
        if stack is None:
            raise InputError(f"{opened[0].filename}: has none of {', '.join(STACKS)}")
        first = opened[0][stack]
        n_jobs = {int(f.attrs["diffuseflow_partial_job"][1]) for f in opened}
        if n_jobs != {len(opened)}:
            split = " or ".join(map(str, sorted(n_jobs)))
            raise InputError(
                f"got {len(opened)} partial files, but they are parts of a split into {split} "
                "slab jobs"
            )
        end = 0
        for f in opened:
            a, b = (int(v) for v in f.attrs["diffuseflow_partial_frames"])
            if a != end:
                raise InputError(f"{f.filename}: starts at frame {a}, expected {end} (gap?)")
            end = b
            d = f.get(stack)
            if d is None or (d.shape, d.chunks, d.dtype, _filters(d)) != (
                first.shape,
                first.chunks,
                first.dtype,
                _filters(first),
            ):
                raise InputError(f"{f.filename}: its {stack} differs from {opened[0].filename}'s")
        if end != first.shape[0]:
            raise InputError(f"the partial files cover frames 0-{end}, not 0-{first.shape[0]}")
        with atomic_output(outfile) as tmp:
            with h5py.File(tmp, "w", track_order=True) as out:
                src = opened[0]
                for k, v in src.attrs.items():
                    if not k.startswith("diffuseflow_partial"):
                        out.attrs[k] = v
                out.attrs["diffuseflow_program"] = (
                    f"{src.attrs['diffuseflow_program']} (gathered from {len(opened)} slab jobs)"
                )
                out.attrs["diffuseflow_parts"] = json.dumps(describe_inputs(parts))
                for key in src:
                    if key != "entry":
                        src.copy(src[key], out, name=key)
                entry = out.create_group("entry")
                for k, v in src["entry"].attrs.items():
                    entry.attrs[k] = v
                for key in src["entry"]:  # the strong-pixel lists are joined, not copied
                    if f"entry/{key}" != strong.GROUP:
                        src.copy(src["entry"][key], entry, name=key)
                dst = out[stack]
                for f in opened[1:]:
                    d = f[stack]
                    for i in range(d.id.get_num_chunks()):
                        offset = d.id.get_chunk_info(i).chunk_offset
                        mask, data = d.id.read_direct_chunk(offset)
                        dst.id.write_direct_chunk(offset, data, mask)
                # after the chunks: the list records the gathered stack's chunk layout
                strong.gather_strong_pixels(opened, out["entry"], stack_codec(first) or "gzip", dst)
                counts = "entry/diffuseflow_mask/masked_pixels"
                if counts in out:
                    out[counts][...] = np.sum([f[counts][()] for f in opened], axis=0)
    finally:
        for f in opened:
            f.close()


def slab_bounds(n_frames: int, frames_per_slab: int):
    """[(start, stop), ...] covering n_frames in runs of frames_per_slab."""
    return [(s, min(s + frames_per_slab, n_frames)) for s in range(0, n_frames, frames_per_slab)]


# ------------------------------------------------------------------------------------------
# mdx2 objects


class ImageSeries:
    """Read access to /entry/image_series of a data.nxs file (ours or mdx2's)."""

    def __init__(self, path):
        self.path = Path(path)
        self.file = open_input(path, "an image series (data.nxs)", ["image_series"])
        g = self.file["entry/image_series"]
        signal = g.attrs.get("signal", "data")
        if isinstance(signal, bytes):
            signal = signal.decode()
        for key in ("phi", "iy", "ix", "exposure_times", signal):
            if key not in g:
                raise InputError(f"{path}: /entry/image_series has no '{key}'")
        self.data = g[signal]
        self.phi = g["phi"][()]
        self.iy = g["iy"][()]
        self.ix = g["ix"][()]
        self.exposure_times = g["exposure_times"][()]
        self.shape = self.data.shape
        if self.data.ndim != 3 or self.shape != (len(self.phi), len(self.iy), len(self.ix)):
            raise InputError(f"{path}: image_series data shape does not match its axes")
        self.chunks = self.data.chunks or (1, self.shape[1], self.shape[2])
        #: the stack's codec, for outputs that follow it (the mask); gzip for any other
        self.codec = "bslz4" if stack_codec(self.data) == "bslz4" else "gzip"
        if self.data.is_virtual and self.data.chunks is None:
            self.chunks = (1, self.shape[1], self.shape[2])

    @property
    def frames_per_slab(self) -> int:
        return int(self.chunks[0])

    def slabs(self, frames_per_slab: int | None = None, frame_range=None):
        """Chunk-aligned runs of frames, optionally only those inside [start, stop)."""
        bounds = slab_bounds(self.shape[0], frames_per_slab or self.frames_per_slab)
        if frame_range is None:
            return bounds
        a, b = frame_range
        if not 0 <= a <= b <= self.shape[0]:
            raise InputError(f"{self.path}: frame range [{a}, {b}) outside 0-{self.shape[0]}")
        return [(max(s, a), min(e, b)) for s, e in bounds if s < b and e > a]

    def read(self, start: int, stop: int, pool=None, out=None) -> np.ndarray:
        return read_slab(self.data, start, stop, pool, out)

    def iter_slabs(
        self, pool=None, frames_per_slab: int | None = None, frame_range=None, reuse=False
    ):
        """Yield ((start, stop), slab) in order. With a pool of >= 2 threads, a coordinating
        thread reads the next slab (decoding its chunks on the pool) while the caller works on
        the current one; at most two slabs are in memory. ``reuse``: slabs are read into two
        buffers in turn, so a yielded slab is valid only until the next one is asked for."""
        bounds = self.slabs(frames_per_slab, frame_range)
        buffers = [None, None]

        def read(k):
            b = bounds[k]
            if not reuse:
                return self.read(*b, pool)
            buffers[k % 2] = self.read(*b, pool, out=buffers[k % 2])
            return buffers[k % 2]

        if pool is None or getattr(pool, "_max_workers", 1) < 2:
            for k, b in enumerate(bounds):
                yield b, read(k)
            return
        with ThreadPoolExecutor(1) as reader:
            ahead = reader.submit(read, 0) if bounds else None
            for k, b in enumerate(bounds):
                slab = ahead.result()
                if k + 1 < len(bounds):
                    ahead = reader.submit(read, k + 1)
                yield b, slab

    def close(self):
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_image_series_axes(g, phi, iy, ix, exposure_times):
    g.create_dataset("phi", data=np.asarray(phi, float)).attrs["units"] = "degree"
    g.create_dataset("iy", data=np.asarray(iy, float))
    g.create_dataset("ix", data=np.asarray(ix, float))
    g.create_dataset("exposure_times", data=np.asarray(exposure_times, float))


def image_series_group(entry, phi, iy, ix, exposure_times):
    g = mdx2_group(entry, "image_series", "mdx2.data", "ImageSeries", nx_class="NXdata")
    g.attrs["signal"] = "data"
    g.attrs["axes"] = str_array(["phi", "iy", "ix"])
    write_image_series_axes(g, phi, iy, ix, exposure_times)
    return g


def mask_dataset(entry, axes, chunks, codec=CODECS[0]) -> h5py.Dataset:
    """mdx2's mask: GridData ``/entry/mask`` without axis names (axis0..2), and an empty
    chunked bool ``signal`` (True = exclude) to be filled slab by slab."""
    g = mdx2_group(entry, "mask", "mdx2.geometry", "GridData", nx_class="NXdata")
    g.attrs["signal"] = "signal"
    g.attrs["axes"] = str_array(["axis0", "axis1", "axis2"])
    for k, ax in enumerate(axes):
        g.create_dataset(f"axis{k}", data=np.asarray(ax, float))
    shape = tuple(len(ax) for ax in axes)
    return create_stack(g, "signal", shape, bool, chunks, codec=codec)


def write_mask_counts(entry, per_frame):
    """Masked pixels per frame, beside mdx2's mask (for QC without re-reading the mask)."""
    g = entry.create_group("diffuseflow_mask")
    g.create_dataset("masked_pixels", data=np.asarray(per_frame, np.int64))


def read_mask_counts(path) -> np.ndarray:
    """Masked pixels per frame of a mask.nxs: the stored counts, or (for a mask written by
    mdx2) counted slab by slab."""
    with open_input(path, "mask.nxs", ["mask"]) as f:
        if "entry/diffuseflow_mask/masked_pixels" in f:
            return f["entry/diffuseflow_mask/masked_pixels"][()]
        dset = f["entry/mask/signal"]
        step = dset.chunks[0] if dset.chunks else 1
        return np.concatenate(
            [
                np.count_nonzero(dset[i : i + step], axis=(1, 2))
                for i in range(0, dset.shape[0], step)
            ]
        )


def write_peaks(entry, name, phi, iy, ix):
    g = mdx2_group(entry, name, "mdx2.data", "Peaks", nx_class="NXreflections")
    g.create_dataset("observed_phi", data=np.asarray(phi, float))
    g.create_dataset("observed_px_y", data=np.asarray(iy, float))
    g.create_dataset("observed_px_x", data=np.asarray(ix, float))
    return g


def read_peaks(f: h5py.File, name: str):
    g = f[f"entry/{name}"]
    return g["observed_phi"][()], g["observed_px_y"][()], g["observed_px_x"][()]


def write_peak_model(entry, r0, sigma):
    g = mdx2_group(entry, "peak_model", "mdx2.geometry", "GaussianPeak")
    g.create_dataset("r0", data=np.asarray(r0, float))
    g.create_dataset("sigma", data=np.asarray(sigma, float))
    return g
