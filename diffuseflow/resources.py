"""Memory and run time to request for one job of a step, sized from the sweep.

The workflow asks these for every job (SLURM turns them into --mem and -t). They are upper
bounds from how the steps work: each streams the sweep in slabs of whole frame-chunks (at most
CHUNK_CAP_MB of int32), keeping about SLABS_IN_FLIGHT of them in memory (the slab being
worked on, the one being read ahead, the compressed chunks), plus per-pixel arrays that scale
with the detector, on top of a Python process with numpy, h5py and numba loaded. Throughputs
are conservative (a few times below those measured in bench/), times SAFETY.
"""

from __future__ import annotations

import math
from pathlib import Path

import h5py

#: resident size of a tool's process before it touches data (numpy, h5py, numba, gemmi)
BASE_MB = 600
#: largest frame slab the import writes by default (importing.default_chunks caps at this)
CHUNK_CAP_MB = 256
SLABS_IN_FLIGHT = 3
#: bytes per detector pixel held for a whole job: mask_peaks' scattering vectors and lookups
PER_PIXEL_BYTES = {"mask_peaks": 64, "find_peaks": 8, "integrate": 80}
#: bytes per pixel-frame of a table the step keeps (integrate: a (voxel, pass) row, ~150 bytes
#: with its hash slots, per ~300 pixel-frames at subdivide 3; generous by 2x)
TABLE_BYTES_PER_PIXEL_FRAME = {"integrate": 1.0}
#: pixels per second per thread, well below the bench/ numbers (bz2 SMV is the slow import)
PX_PER_S = {
    "import": 2e6,
    "find_peaks": 10e6,
    "mask_peaks": 20e6,
    "bin": 10e6,
    "integrate": 10e6,
}
SAFETY = 3
MIN_RUNTIME = 10  # minutes: scheduling and start-up dominate small jobs


def expt_shape(path, experiment=None, frames=None) -> tuple[int, int, int]:
    """(frames, rows, columns) of the sweep an .expt file describes (one experiment of it,
    a run of its frames). A missing file raises FileNotFoundError naming it, which Snakemake
    takes as "size not known yet"."""
    from diffuseflow.io.expt import read_expt

    if not Path(path).exists():
        raise FileNotFoundError(2, "not made yet", str(path))
    e = read_expt(path, experiment, frames)
    return (e.scan.num_images, *e.panel.shape)


def stack_shape(path) -> tuple[int, int, int]:
    """(frames, rows, columns) of the image stack in a data.nxs."""
    if not Path(path).exists():
        raise FileNotFoundError(2, "not made yet", str(path))
    with h5py.File(path, "r") as f:
        return tuple(int(n) for n in f["entry/image_series/data"].shape)


def estimate(step: str, shape, threads: int = 1, slabs: int = 1) -> dict[str, int]:
    """{"mem_mb", "runtime" (minutes)} for one job of ``step`` (import, find_peaks,
    mask_peaks, bin) over a sweep of ``shape``, split into ``slabs`` jobs."""
    frames, ny, nx = shape
    pixels = ny * nx
    slab_mb = min(CHUNK_CAP_MB, frames * pixels * 4 / 1e6)
    mem = BASE_MB + SLABS_IN_FLIGHT * slab_mb + PER_PIXEL_BYTES.get(step, 0) * pixels / 1e6
    mem += TABLE_BYTES_PER_PIXEL_FRAME.get(step, 0) * frames * pixels / slabs / 1e6
    seconds = frames * pixels / slabs / (PX_PER_S[step] * max(1, threads))
    return {
        "mem_mb": int(100 * math.ceil(mem / 100)),
        "runtime": int(max(MIN_RUNTIME, math.ceil(SAFETY * seconds / 60))),
    }
