"""integrate: sum counts on a subdivided Miller grid (mdx2 tutorial part 5).

Every valid (not -1), unmasked pixel goes to the voxel ``round(hkl * ndiv)``. As mdx2 1.0.5,
the image stack is cut into its HDF5 chunks (frames x rows x columns); per chunk and voxel a
*partial* sums pixels, counts, exposure seconds and phi, iy, ix. A voxel's partials are then
kept apart by rotation pass: ``n = floor((phi_mean - phi_mean_min) / max_spread)`` with
``phi_mean_min`` the smallest partial mean of that voxel over the sweep, and summed per
(voxel, n); phi, iy, ix become pixel means. Rows are sorted by (h, k, l, n) as mdx2's.

Streaming: chunks are visited in rotation order, so a voxel's smallest partial mean is known
once the first frame-chunk that sees it is done; each frame-chunk's partials are folded into the
(voxel, n) accumulator straight away. Memory is the table itself (plus one voxel -> smallest
mean map, no larger), not the number of frames. Per-pixel work runs in compiled kernels: one
hash table per detector tile, tiles on a thread pool (results do not depend on the number of
threads: a tile's pixels are always summed in the same order).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numba import njit

from diffuseflow.errors import InputError
from diffuseflow.geometry.kernels import grid_cells
from diffuseflow.io import tables
from diffuseflow.io.tables import HKLTable, hkl_from_voxels

#: packed voxel keys (see diffuseflow.io.tables.pack_voxel), compiled for the kernels
_pack = njit(inline="always")(tables.pack_voxel)
_EMPTY = -1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_GOLDEN_N = np.uint64(0xC2B2AE3D27D4EB4F)

# The pixel and fold loops call no njit function that takes arrays: each such call increfs
# and decrefs every array argument atomically, which cost 60 % of the pixel loop's time (and
# inline="always" rebinds the arguments, the same). Their probes are written out in place.
#
# Open-addressing hash tables (linear probing, load <= 1/2): int64 keys (_EMPTY = free), an
# optional pass number per slot, and two payload blocks, int64 (cap, ni) and float64 (cap, nf).
# The tile tables, the voxel -> smallest-mean table and the (voxel, pass) row table are all of
# this one kind; only their payloads differ.


@njit(inline="always")
def _slot(key, n, bits):
    h = np.uint64(key) * _GOLDEN + np.uint64(n) * _GOLDEN_N
    return np.int64(h >> np.uint64(64 - bits))


def _new_table(bits, ni, nf, with_passes=False):
    cap = 1 << bits
    keys = np.full(cap, _EMPTY, np.int64)
    passes = np.zeros(cap if with_passes else 0, np.int64)
    return keys, passes, np.zeros((cap, ni), np.int64), np.zeros((cap, nf))


@njit(cache=True)
def _rehash(keys, passes, ipay, fpay, bits):
    """The same entries in a table of 2**bits slots (``passes`` empty: a table without)."""
    cap = 1 << bits
    msk = cap - 1
    nk = np.full(cap, _EMPTY, np.int64)
    npass = np.zeros(cap if passes.size else 0, np.int64)
    ni = np.zeros((cap, ipay.shape[1]), np.int64)
    nf = np.zeros((cap, fpay.shape[1]))
    for i in range(keys.size):
        if keys[i] == _EMPTY:
            continue
        n = passes[i] if passes.size else 0
        j = _slot(keys[i], n, bits)
        while nk[j] != _EMPTY:
            j = (j + 1) & msk
        nk[j] = keys[i]
        if passes.size:
            npass[j] = n
        ni[j] = ipay[i]
        nf[j] = fpay[i]
    return nk, npass, ni, nf


# -- per-tile partials -------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _fill(
    data, mask, use_mask, y_lo, y_hi, x_lo, x_hi, phi, expo, nd0, nd1, nd2, exact,
    q, M, gh, gk, gl, p0, wp, gy0, gwy, gx0, gwx, iy_axis, ix_axis,
    keys, rows, bits, cache_k, cache_r, acc, used, key_order, f0, y0,
):  # fmt: skip
    """Accumulate the rows of pixels from (f0, y0) on until the table might pass half full
    (or ``acc`` fill up).

    Along a row, neighbouring pixels mostly share a voxel (a pixel spans a fraction of one):
    a run of pixels in one voxel is summed in registers and added to the table once. Integer
    sums (pixels, counts, and the iy, ix pixel indices) are exact in any order (``acc`` holds
    them as float64: exact below 2**53); exposure and phi are constant within a frame, so a
    run adds n * value (phi pixel by pixel in compat mode, as mdx2). Returns (f, y, used,
    done): where to resume after growing the table. The table arrays are never reassigned
    here, so the pixel loop carries no reference counting.
    """
    cap = keys.size
    msk = cap - 1
    cache_mask = cache_k.size - 1
    width = x_hi - x_lo
    nf = data.shape[0]
    nxg = gh.shape[2] if not exact else 1
    rh = np.empty(nxg)
    rk = np.empty(nxg)
    rl = np.empty(nxg)
    for f in range(f0, nf):
        ph = phi[f]
        ex = expo[f]
        m00, m01, m02 = M[f, 0, 0], M[f, 0, 1], M[f, 0, 2]
        m10, m11, m12 = M[f, 1, 0], M[f, 1, 1], M[f, 1, 2]
        m20, m21, m22 = M[f, 2, 0], M[f, 2, 1], M[f, 2, 2]
        pa = p0[f]
        fp = wp[f]
        for y in range(y0 if f == f0 else y_lo, y_hi):
            # a row adds at most `width` voxels
            if 2 * (used + width) > cap or used + width > acc.shape[0]:
                return f, y, used, False
            yv = iy_axis[y]
            if not exact:  # mdx2's grid: interpolate phi and y once per row, then x per pixel
                fy = gwy[y]
                ya = gy0[y]
                c_lo = gx0[x_lo]
                c_hi = min(gx0[x_hi - 1] + 2, nxg)
                for c in range(c_lo, c_hi):
                    rh[c] = (1.0 - fp) * ((1.0 - fy) * gh[pa, ya, c] + fy * gh[pa, ya + 1, c]) + (
                        fp * ((1.0 - fy) * gh[pa + 1, ya, c] + fy * gh[pa + 1, ya + 1, c])
                    )
                    rk[c] = (1.0 - fp) * ((1.0 - fy) * gk[pa, ya, c] + fy * gk[pa, ya + 1, c]) + (
                        fp * ((1.0 - fy) * gk[pa + 1, ya, c] + fy * gk[pa + 1, ya + 1, c])
                    )
                    rl[c] = (1.0 - fp) * ((1.0 - fy) * gl[pa, ya, c] + fy * gl[pa, ya + 1, c]) + (
                        fp * ((1.0 - fy) * gl[pa + 1, ya, c] + fy * gl[pa + 1, ya + 1, c])
                    )
            # the current run: its voxel and sums (run_pix == 0: none yet); x == x_hi ends the
            # row, so one place below adds a finished run to the table
            rH = rK = rL = np.int64(0)
            run_pix = 0
            run_cnt = 0
            run_ix = 0.0
            H = K = L = np.int64(0)
            v = 0
            for x in range(x_lo, x_hi + 1):
                if x < x_hi:
                    v = data[f, y, x]
                    if v == -1:
                        continue
                    if use_mask and mask[f, y, x]:
                        continue
                    if exact:
                        qx = q[0, y, x]
                        qy = q[1, y, x]
                        qz = q[2, y, x]
                        h = m00 * qx + m01 * qy + m02 * qz
                        k = m10 * qx + m11 * qy + m12 * qz
                        l = m20 * qx + m21 * qy + m22 * qz  # noqa: E741
                    else:
                        xa = gx0[x]
                        fx = gwx[x]
                        h = (1.0 - fx) * rh[xa] + fx * rh[xa + 1]
                        k = (1.0 - fx) * rk[xa] + fx * rk[xa + 1]
                        l = (1.0 - fx) * rl[xa] + fx * rl[xa + 1]  # noqa: E741
                    H = np.int64(np.rint(h * nd0))
                    K = np.int64(np.rint(k * nd1))
                    L = np.int64(np.rint(l * nd2))
                    if run_pix > 0 and H == rH and K == rK and L == rL:
                        run_pix += 1
                        run_cnt += v
                        run_ix += ix_axis[x]
                        continue
                if run_pix > 0:  # add the finished run to its voxel's row of acc
                    key = _pack(rH, rK, rL)
                    # a small direct-mapped cache in front of the hash table: the voxels of
                    # nearby rows and frames repeat, and the cache stays in L1
                    c = (key ^ (key >> 17) ^ (key >> 35)) & cache_mask
                    if cache_k[c] == key:
                        r = cache_r[c]
                    else:
                        j = _slot(key, 0, bits)
                        while keys[j] != _EMPTY and keys[j] != key:
                            j = (j + 1) & msk
                        if keys[j] == _EMPTY:
                            keys[j] = key
                            rows[j, 0] = used
                            key_order[used] = key
                            used += 1
                        r = rows[j, 0]
                        cache_k[c] = key
                        cache_r[c] = r
                    acc[r, 0] += run_pix
                    acc[r, 1] += run_cnt
                    acc[r, 2] += ex * run_pix
                    if exact:
                        acc[r, 3] += ph * run_pix
                    else:
                        # mdx2 adds phi pixel by pixel; its pass split n = floor(d phi /
                        # max_spread) can sit exactly on a boundary (regular phi steps), where
                        # one ulp changes a row
                        t = acc[r, 3]
                        for _ in range(run_pix):
                            t += ph
                        acc[r, 3] = t
                    acc[r, 4] += yv * run_pix
                    acc[r, 5] += run_ix
                if x == x_hi:
                    break
                rH, rK, rL = H, K, L
                run_pix = 1
                run_cnt = np.int64(v)
                run_ix = ix_axis[x]
    return nf, y_lo, used, True


@njit(cache=True, nogil=True)
def _tile_partials(
    data, mask, use_mask, y_lo, y_hi, x_lo, x_hi, phi, expo, nd0, nd1, nd2, exact,
    q, M, gh, gk, gl, p0, wp, gy0, gwy, gx0, gwx, iy_axis, ix_axis, key_order,
):  # fmt: skip
    """Partials of one chunk (all frames of the slab, rows y_lo:y_hi, columns x_lo:x_hi).

    Pixels are visited frame by frame in C order, the order of mdx2's bincount. Returns the
    partials in first-seen order: keys, (m, 6) sums of pixels, counts, seconds, phi, iy, ix
    (``key_order`` is a scratch buffer of at least the tile's pixel count).
    """
    bits = 12
    while (1 << bits) < 4 * (x_hi - x_lo):
        bits += 1
    keys = np.full(1 << bits, _EMPTY, np.int64)
    rows = np.zeros((1 << bits, 1), np.int64)  # key -> row of acc, rows in first-seen order
    none = np.zeros(0, np.int64)
    acc = np.zeros((1 << (bits - 1), 6))
    cache_k = np.full(256, _EMPTY, np.int64)
    cache_r = np.zeros(256, np.int64)
    used = 0
    f, y = 0, y_lo
    while True:
        f, y, used, done = _fill(
            data, mask, use_mask, y_lo, y_hi, x_lo, x_hi, phi, expo, nd0, nd1, nd2, exact,
            q, M, gh, gk, gl, p0, wp, gy0, gwy, gx0, gwx, iy_axis, ix_axis,
            keys, rows, bits, cache_k, cache_r, acc, used, key_order, f, y,
        )  # fmt: skip
        if done:
            break
        if 2 * (used + x_hi - x_lo) > keys.size:
            bits += 1
            keys, _, rows, _ = _rehash(keys, none, rows, np.zeros((keys.size, 0)), bits)
        if used + x_hi - x_lo > acc.shape[0]:
            grown = np.zeros((2 * acc.shape[0], 6))
            grown[:used] = acc[:used]
            acc = grown
    return key_order[:used].copy(), acc[:used].copy()


@dataclass
class Partials:
    """Per-chunk partial sums (any number of chunks, in rotation order)."""

    keys: np.ndarray
    pixels: np.ndarray
    counts: np.ndarray
    seconds: np.ndarray
    phi: np.ndarray
    iy: np.ndarray
    ix: np.ndarray

    FIELDS = ("keys", "pixels", "counts", "seconds", "phi", "iy", "ix")

    @classmethod
    def concat(cls, parts) -> Partials:
        parts = list(parts)
        if not parts:
            return cls(*(np.empty(0, np.int64) for _ in range(3)), *(np.empty(0) for _ in range(4)))
        return cls(*(np.concatenate([getattr(p, n) for p in parts]) for n in cls.FIELDS))

    def __len__(self):
        return len(self.keys)


class PixelIndexer:
    """How pixels of frame i get their hkl: exact (M . q) or mdx2's grid (compat)."""

    def __init__(self, geomfile, mdx2_compat: bool, phi: np.ndarray, ny: int, nx: int):
        self.exact = not mdx2_compat
        self.phi = np.asarray(phi, float)
        dummy3 = np.zeros((1, 1, 1))
        if self.exact:
            geom = geomfile.sweep_geometry(False)
            self.q = np.ascontiguousarray(geom.scattering_vector_image())
            self.M = np.ascontiguousarray(geom.lab_to_hkl(self.phi))
            self.grid = (dummy3, dummy3, dummy3)
            zi, zf = np.zeros(max(len(phi), ny, nx), np.int64), np.zeros(max(len(phi), ny, nx))
            self.cells = ((zi, zf), (zi, zf), (zi, zf))
            d_min, _ = geom.d_spacing_range()
            cell_max = float(np.linalg.norm(geom.crystal.real_space_matrix, axis=1).max())
            self.hmax = cell_max / d_min + 2
        else:
            grid = geomfile.grid_hkl()
            self.grid = tuple(np.ascontiguousarray(grid[..., i]) for i in range(3))
            phi_g, iy_g, ix_g = geomfile.grid_axes
            self.cells = (
                grid_cells(phi_g, self.phi),
                grid_cells(iy_g, np.arange(ny, dtype=float)),
                grid_cells(ix_g, np.arange(nx, dtype=float)),
            )
            self.q = np.zeros((3, 1, 1))
            self.M = np.zeros((len(self.phi), 3, 3))
            self.hmax = float(np.abs(grid).max()) + 2


def tiles(shape, chunks):
    """(y_lo, y_hi, x_lo, x_hi) of every detector chunk, in mdx2's order (rows, then columns)."""
    _, ny, nx = shape
    _, cy, cx = chunks
    return [
        (y0, min(y0 + cy, ny), x0, min(x0 + cx, nx))
        for y0 in range(0, ny, cy)
        for x0 in range(0, nx, cx)
    ]


def slab_partials(
    indexer: PixelIndexer, data, mask, start, ndiv, expo, axes, tile_list, pool=None
) -> Partials:
    """Partials of one slab (one frame-chunk) over all detector tiles, in mdx2's chunk order.
    ``axes``: the image series' (iy, ix) axis values, whose means the table records."""
    nf = data.shape[0]
    iy_axis, ix_axis = (np.ascontiguousarray(a, float) for a in axes)
    sl = slice(start, start + nf)
    (p0, wp), (gy0, gwy), (gx0, gwx) = indexer.cells
    phi = np.ascontiguousarray(indexer.phi[sl])
    M = indexer.M[sl] if indexer.exact else indexer.M[:nf]
    use_mask = mask is not None
    mask = mask if use_mask else np.zeros((1, 1, 1), np.bool_)
    p0s = p0[sl] if not indexer.exact else p0[:nf]
    wps = wp[sl] if not indexer.exact else wp[:nf]

    def run(tile):
        y_lo, y_hi, x_lo, x_hi = tile
        scratch = np.empty(nf * (y_hi - y_lo) * (x_hi - x_lo), np.int64)
        out = _tile_partials(
            data, mask, use_mask, y_lo, y_hi, x_lo, x_hi, phi, expo[sl],
            ndiv[0], ndiv[1], ndiv[2], indexer.exact, indexer.q, M, *indexer.grid,
            p0s, wps, gy0, gwy, gx0, gwx, iy_axis, ix_axis, scratch,
        )  # fmt: skip
        keys, sums = out
        return Partials(
            keys, sums[:, 0].astype(np.int64), sums[:, 1].astype(np.int64), *sums[:, 2:].T
        )

    results = list(pool.map(run, tile_list)) if pool is not None else [run(t) for t in tile_list]
    return Partials.concat(results)


# -- the (voxel, pass) accumulator -----------------------------------------------------------------


@njit(cache=True)
def _fold(
    pkeys, ppix, pcnt, psec, pphi, piy, pix_, spread,
    vkeys, vmin, vbits, rkeys, rpass, rrow, rbits, acc_i, acc_f, nrows,
):  # fmt: skip
    """Fold a batch of partials into the voxel-minimum table and the (voxel, n) rows.

    The batch must hold whole frame-chunks later in rotation than every earlier batch, so a
    voxel's smallest partial mean is final once its first batch has been folded.
    """
    m = pkeys.size
    vmask = vkeys.size - 1
    rmask = rkeys.size - 1
    # 1. smallest partial mean phi per voxel
    for i in range(m):
        key = pkeys[i]
        t = pphi[i] / ppix[i]
        j = _slot(key, 0, vbits)
        while vkeys[j] != _EMPTY and vkeys[j] != key:
            j = (j + 1) & vmask
        if vkeys[j] == _EMPTY:
            vkeys[j] = key
            vmin[j, 0] = t
        elif t < vmin[j, 0]:
            vmin[j, 0] = t
    # 2. pass index and accumulation
    for i in range(m):
        key = pkeys[i]
        t = pphi[i] / ppix[i]
        j = _slot(key, 0, vbits)
        while vkeys[j] != key:
            j = (j + 1) & vmask
        n = np.int64(np.floor((t - vmin[j, 0]) / spread))
        r = _slot(key, n, rbits)
        while rkeys[r] != _EMPTY and not (rkeys[r] == key and rpass[r] == n):
            r = (r + 1) & rmask
        if rkeys[r] == _EMPTY:
            rkeys[r] = key
            rpass[r] = n
            rrow[r, 0] = nrows
            nrows += 1
        row = rrow[r, 0]
        acc_i[row, 0] += ppix[i]
        acc_i[row, 1] += pcnt[i]
        acc_f[row, 0] += psec[i]
        acc_f[row, 1] += pphi[i]
        acc_f[row, 2] += piy[i]
        acc_f[row, 3] += pix_[i]
    return nrows


class Accumulator:
    """(voxel, rotation pass) rows of the integrated table, grown as partials arrive."""

    def __init__(self, max_spread: float):
        if not (max_spread > 0 and math.isfinite(max_spread)):
            raise InputError(f"--max_spread must be a positive number of degrees, is {max_spread}")
        self.spread = float(max_spread)
        self.vbits = self.rbits = 16
        # voxel -> smallest partial mean phi; (voxel, pass) -> row of acc_i / acc_f
        self.vkeys, self.vnone, _, self.vmin = _new_table(self.vbits, 0, 1)
        self.rkeys, self.rpass, self.rrow, _ = _new_table(self.rbits, 1, 0, with_passes=True)
        self.nvox = 0
        self.acc_i = np.zeros((1 << 15, 2), np.int64)
        self.acc_f = np.zeros((1 << 15, 4))
        self.nrows = 0

    def fold(self, p: Partials):
        m = len(p)
        if m == 0:
            return
        # room for every partial being new: load factor <= 1/2 in both tables
        while 2 * (self.nvox + m) > (1 << self.vbits):
            self.vbits += 1
            self.vkeys, _, _, self.vmin = _rehash(
                self.vkeys, self.vnone, np.zeros((len(self.vkeys), 0), np.int64), self.vmin,
                self.vbits,
            )  # fmt: skip
        while 2 * (self.nrows + m) > (1 << self.rbits):
            self.rbits += 1
            self.rkeys, self.rpass, self.rrow, _ = _rehash(
                self.rkeys, self.rpass, self.rrow, np.zeros((len(self.rkeys), 0)), self.rbits
            )
        if self.nrows + m > len(self.acc_i):
            size = max(2 * len(self.acc_i), self.nrows + m)
            self.acc_i = np.resize(self.acc_i, (size, 2))
            self.acc_f = np.resize(self.acc_f, (size, 4))
            self.acc_i[self.nrows :] = 0
            self.acc_f[self.nrows :] = 0
        self.nrows = _fold(
            p.keys, p.pixels, p.counts, p.seconds, p.phi, p.iy, p.ix, self.spread,
            self.vkeys, self.vmin, self.vbits, self.rkeys, self.rpass, self.rrow, self.rbits,
            self.acc_i, self.acc_f, self.nrows,
        )  # fmt: skip
        self.nvox = int(np.count_nonzero(self.vkeys != _EMPTY))

    def table(self, ndiv) -> HKLTable:
        """The integrated table, sorted by (h, k, l, n) as mdx2's groupby."""
        used = self.rkeys != _EMPTY
        keys, n, rows = self.rkeys[used], self.rpass[used], self.rrow[used, 0]
        # packed keys sort as (h, k, l) (see tables.pack_voxel)
        order = np.lexsort((n, keys))
        keys, n, rows = keys[order], n[order], rows[order]
        ai, af = self.acc_i[rows], self.acc_f[rows]
        pixels = ai[:, 0]
        cols = hkl_from_voxels(tables.unpack_voxels(keys), ndiv)
        cols.update(
            n=n.astype(np.float64),
            pixels=pixels.astype(np.int32),
            counts=ai[:, 1].astype(np.int32),
            seconds=af[:, 0].astype(np.float32),
            phi=(af[:, 1] / pixels).astype(np.float32),
            iy=(af[:, 2] / pixels).astype(np.float32),
            ix=(af[:, 3] / pixels).astype(np.float32),
        )
        return HKLTable(cols, tuple(int(d) for d in ndiv))


def check_subdivide(ndiv, hmax: float):
    if len(ndiv) != 3 or any(int(d) != d or d < 1 for d in ndiv):
        raise InputError(f"--subdivide needs three positive integers, is {list(ndiv)}")
    if hmax * max(ndiv) >= tables.VOXEL_OFFSET - 1:
        raise InputError(
            f"--subdivide {list(ndiv)}: Miller indices up to {hmax:.0f} give voxel indices beyond "
            f"+-{tables.VOXEL_OFFSET - 1}"
        )
    return tuple(int(d) for d in ndiv)


def integrate_series(
    series, indexer, mask_dset, ndiv, frame_range=None, accumulator=None, threads=1, log=print
):
    """Partials of every slab of ``series`` (frames of ``frame_range`` only, if given); folded
    into ``accumulator`` if given (one job) or returned (a slab job's part)."""
    from diffuseflow.io.nexus import read_slab

    ndiv = check_subdivide(ndiv, indexer.hmax)
    phi = np.asarray(series.phi, float)
    if len(phi) > 1 and np.any(np.diff(phi) <= 0):
        raise InputError(f"{series.path}: phi must increase frame by frame to integrate")
    expo = np.asarray(series.exposure_times, float)
    tile_list = tiles(series.shape, series.chunks)
    kept = []
    total = 0
    with ThreadPoolExecutor(max(1, threads)) as pool:
        use_pool = pool if threads > 1 else None
        mask_buf = None
        for (start, stop), data in series.iter_slabs(use_pool, frame_range=frame_range, reuse=True):
            mask = None
            if mask_dset is not None:
                if mask_buf is None or mask_buf.shape[0] != stop - start:
                    mask_buf = np.empty((stop - start, *series.shape[1:]), np.bool_)
                mask = read_slab(mask_dset, start, stop, use_pool, out=mask_buf)
            p = slab_partials(
                indexer, data, mask, start, ndiv, expo, (series.iy, series.ix), tile_list, use_pool
            )
            total += int(p.pixels.sum())
            if accumulator is not None:
                accumulator.fold(p)
            else:
                kept.append(p)
            log(f"frames {start} to {stop - 1}: {len(p)} partial voxels")
    log(f"integrated {total} pixels")
    return None if accumulator is not None else Partials.concat(kept)


# -- slab jobs' parts ---------------------------------------------------------------------------


def write_partials(path, partials: Partials, params, inputs, frames, job, sweep):
    """A slab job's partial sums (its frame-chunks, in rotation order) for --gather."""
    import json

    from diffuseflow.io import nexus

    with nexus.atomic_output(path) as tmp:
        with nexus.new_file(tmp, "integrate", params, inputs, sweep) as f:
            nexus.mark_partial(f, frames, job)
            g = f["entry"].create_group("integrate_partials")
            g.attrs["parameters"] = json.dumps(params, sort_keys=True)
            for name in Partials.FIELDS:
                g.create_dataset(name, data=getattr(partials, name), compression="gzip",
                                 compression_opts=1, shuffle=True)  # fmt: skip


def read_partials(parts, params):
    """Yield the parts' partial sums in job order, refusing parts of other settings or an
    incomplete set of jobs."""
    import json

    import h5py

    from diffuseflow.io import nexus

    found = {}
    for path in parts:
        with nexus.open_input(path, "an integrate slab part", ["integrate_partials"]) as f:
            g = f["entry/integrate_partials"]
            if json.loads(g.attrs["parameters"]) != params:
                raise InputError(
                    f"{path}: made with {g.attrs['parameters']}, not {json.dumps(params)}"
                )
            job = tuple(int(v) for v in f.attrs["diffuseflow_partial_job"])
        found[job[0]] = (path, job[1])
    totals = {n for _, n in found.values()}
    if len(totals) != 1 or sorted(found) != list(range(next(iter(totals)))):
        raise InputError(
            f"--gather needs the parts of jobs 0..N-1 of one split; got jobs {sorted(found)} of "
            f"{sorted(totals)}"
        )
    for k in sorted(found):
        with h5py.File(found[k][0], "r") as f:
            g = f["entry/integrate_partials"]
            yield Partials(*(g[name][()] for name in Partials.FIELDS))
