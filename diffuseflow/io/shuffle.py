"""HDF5's byte-shuffle filter as compiled kernels.

A chunk of N elements is stored shuffled as byte 0 of every element, then byte 1 of every
element, and so on. numpy can only do this with a strided transpose (~0.35 GB/s for the
inverse); these loops run one byte plane at a time over a contiguous chunk at several GB/s
and release the GIL, so chunks are (un)shuffled in parallel threads.
"""

from __future__ import annotations

import threading

import numpy as np
from numba import njit

_local = threading.local()


def _scratch(name: str, nbytes: int) -> np.ndarray:
    """A per-thread reusable byte buffer: fresh 4 MB allocations per chunk cost more in page
    faults than the shuffle itself."""
    buf = getattr(_local, name, None)
    if buf is None or buf.size < nbytes:
        buf = np.empty(nbytes, np.uint8)
        setattr(_local, name, buf)
    return buf[:nbytes]


@njit(cache=True, nogil=True)
def _shuffle4(src, dst):
    # 4-byte elements: byte plane k of every 32-bit word, all reads and writes sequential
    n = src.shape[0]
    for k in range(4):
        shift = 8 * k
        for e in range(n):
            dst[k * n + e] = (src[e] >> shift) & 0xFF


@njit(cache=True, nogil=True)
def _shuffle(src, item, dst):
    n = src.shape[0] // item
    for k in range(item):  # sequential writes, short-stride reads
        for e in range(n):
            dst[k * n + e] = src[e * item + k]


@njit(cache=True, nogil=True)
def _unshuffle4(src, dst):
    # 4-byte elements (int32 images): one 32-bit write per element from four byte planes
    n = dst.shape[0]
    for e in range(n):
        dst[e] = (
            np.uint32(src[e])
            | (np.uint32(src[n + e]) << 8)
            | (np.uint32(src[2 * n + e]) << 16)
            | (np.uint32(src[3 * n + e]) << 24)
        )


@njit(cache=True, nogil=True)
def _unshuffle(src, item, dst):
    n = src.shape[0] // item
    for e in range(n):  # sequential writes, one read stream per byte plane
        for k in range(item):
            dst[e * item + k] = src[k * n + e]


def shuffle_chunk(slab: np.ndarray, f0, y0, x0, chunks) -> np.ndarray:
    """Shuffled bytes of the chunk of ``slab`` at (f0, y0, x0), zero-padded to ``chunks``.

    Returns a view of a per-thread buffer: use it before the next call in the same thread.
    """
    cf, cy, cx = chunks
    region = slab[f0 : f0 + cf, y0 : y0 + cy, x0 : x0 + cx]
    nbytes = cf * cy * cx * slab.itemsize
    block = _scratch("block", nbytes).view(slab.dtype).reshape(cf, cy, cx)
    if region.shape != (cf, cy, cx):  # HDF5 stores edge chunks padded to the full shape
        block[...] = 0
    block[: region.shape[0], : region.shape[1], : region.shape[2]] = region
    if slab.itemsize == 1:
        return block.reshape(-1).view(np.uint8)
    dst = _scratch("shuffled", nbytes)
    if slab.itemsize == 4:
        _shuffle4(block.reshape(-1).view(np.uint32), dst)
    else:
        _shuffle(block.reshape(-1).view(np.uint8), slab.itemsize, dst)
    return dst


def unshuffle_chunk_into(buf: bytes, out: np.ndarray, f_off, y0, x0, chunks, nf, ny, nx):
    """Write the (nf, ny, nx) corner of a shuffled chunk into ``out`` at (f_off, y0, x0)."""
    cf, cy, cx = chunks
    src = np.frombuffer(buf, np.uint8)
    if out.itemsize == 1:
        block = src.view(out.dtype).reshape(cf, cy, cx)
    else:
        flat = _scratch("unshuffled", src.size)
        if out.itemsize == 4:
            _unshuffle4(src, flat.view(np.uint32))
        else:
            _unshuffle(src, out.itemsize, flat)
        block = flat.view(out.dtype).reshape(cf, cy, cx)
    out[f_off : f_off + nf, y0 : y0 + ny, x0 : x0 + nx] = block[:nf, :ny, :nx]
