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
from diffuseflow.io.tables import HKLTable, hkl_from_voxels

#: voxel indices are packed into one int64 as three 21-bit fields offset by 2**20
_OFF = 1 << 20
_EMPTY = -1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@njit(inline="always")
def _pack(H, K, L):
    return ((H + _OFF) << 42) | ((K + _OFF) << 21) | (L + _OFF)


def unpack(keys: np.ndarray) -> np.ndarray:
    """(n, 3) int64 voxel indices of packed keys."""
    keys = np.asarray(keys, np.int64)
    mask = (1 << 21) - 1
    return np.stack([(keys >> 42) - _OFF, ((keys >> 21) & mask) - _OFF, (keys & mask) - _OFF], 1)


@njit(inline="always")
def _slot(key, bits):
    return np.int64((np.uint64(key) * _GOLDEN) >> np.uint64(64 - bits))


# -- per-tile partials -------------------------------------------------------------------------


@njit(cache=True)
def _grow(keys, pix, cnt, sec, sphi, siy, six, bits):
    """Rehash a tile table into one of twice the size."""
    bits += 1
    cap = 1 << bits
    nk = np.full(cap, _EMPTY, np.int64)
    npix = np.zeros(cap, np.int64)
    ncnt = np.zeros(cap, np.int64)
    nsec = np.zeros(cap)
    nphi = np.zeros(cap)
    niy = np.zeros(cap)
    nix = np.zeros(cap)
    mask = cap - 1
    for i in range(keys.size):
        k = keys[i]
        if k == _EMPTY:
            continue
        j = _slot(k, bits)
        while nk[j] != _EMPTY:
            j = (j + 1) & mask
        nk[j] = k
        npix[j] = pix[i]
        ncnt[j] = cnt[i]
        nsec[j] = sec[i]
        nphi[j] = sphi[i]
        niy[j] = siy[i]
        nix[j] = six[i]
    return nk, npix, ncnt, nsec, nphi, niy, nix, bits


@njit(cache=True, nogil=True)
def _fill(
    data, mask, use_mask, y_lo, y_hi, x_lo, x_hi, phi, expo, nd0, nd1, nd2, exact,
    q, M, gh, gk, gl, p0, wp, gy0, gwy, gx0, gwx, iy_axis, ix_axis,
    keys, pix, cnt, sec, sphi, siy, six, bits, used, key_order, f0, y0, x0,
):  # fmt: skip
    """Accumulate pixels from (f0, y0, x0) on, in C order, until the table is half full.

    Returns (f, y, x, used, done): where to resume after growing the table. The table arrays
    are never reassigned here, so the pixel loop carries no reference counting.
    """
    cap = keys.size
    msk = cap - 1
    nf = data.shape[0]
    nxg = gh.shape[2] if not exact else 1
    rh = np.empty(nxg)
    rk = np.empty(nxg)
    rl = np.empty(nxg)
    last_key = _EMPTY
    last_j = 0
    for f in range(f0, nf):
        ph = phi[f]
        ex = expo[f]
        m00, m01, m02 = M[f, 0, 0], M[f, 0, 1], M[f, 0, 2]
        m10, m11, m12 = M[f, 1, 0], M[f, 1, 1], M[f, 1, 2]
        m20, m21, m22 = M[f, 2, 0], M[f, 2, 1], M[f, 2, 2]
        pa = p0[f]
        fp = wp[f]
        for y in range(y0 if f == f0 else y_lo, y_hi):
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
            for x in range(x0 if (f == f0 and y == y0) else x_lo, x_hi):
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
                key = _pack(
                    np.int64(np.rint(h * nd0)),
                    np.int64(np.rint(k * nd1)),
                    np.int64(np.rint(l * nd2)),
                )
                new = False
                if key == last_key:  # neighbouring pixels mostly share a voxel: no probe
                    j = last_j
                else:
                    j = _slot(key, bits)
                    while keys[j] != _EMPTY and keys[j] != key:
                        j = (j + 1) & msk
                    new = keys[j] == _EMPTY
                    last_key = key
                    last_j = j
                if new:
                    keys[j] = key
                    key_order[used] = key
                    used += 1
                pix[j] += 1
                cnt[j] += v
                sec[j] += ex
                sphi[j] += ph
                siy[j] += yv
                six[j] += ix_axis[x]
                if new and 2 * used > cap:
                    return f, y, x + 1, used, False
    return nf, y_lo, x_lo, used, True


@njit(cache=True, nogil=True)
def _tile_partials(
    data, mask, use_mask, y_lo, y_hi, x_lo, x_hi, phi, expo, nd0, nd1, nd2, exact,
    q, M, gh, gk, gl, p0, wp, gy0, gwy, gx0, gwx, iy_axis, ix_axis, key_order,
):  # fmt: skip
    """Partials of one chunk (all frames of the slab, rows y_lo:y_hi, columns x_lo:x_hi).

    Pixels are visited frame by frame in C order, the order of mdx2's bincount, so each
    partial's sums are the same floating-point sums. Returns the partials in first-seen order
    (``key_order`` is a scratch buffer of at least the tile's pixel count).
    """
    bits = 12
    cap = 1 << bits
    keys = np.full(cap, _EMPTY, np.int64)
    pix = np.zeros(cap, np.int64)
    cnt = np.zeros(cap, np.int64)
    sec = np.zeros(cap)
    sphi = np.zeros(cap)
    siy = np.zeros(cap)
    six = np.zeros(cap)
    used = 0
    f, y, x = 0, y_lo, x_lo
    while True:
        f, y, x, used, done = _fill(
            data, mask, use_mask, y_lo, y_hi, x_lo, x_hi, phi, expo, nd0, nd1, nd2, exact,
            q, M, gh, gk, gl, p0, wp, gy0, gwy, gx0, gwx, iy_axis, ix_axis,
            keys, pix, cnt, sec, sphi, siy, six, bits, used, key_order, f, y, x,
        )  # fmt: skip
        if done:
            break
        keys, pix, cnt, sec, sphi, siy, six, bits = _grow(keys, pix, cnt, sec, sphi, siy, six, bits)
    cap = 1 << bits
    # compact in first-seen order
    out_k = np.empty(used, np.int64)
    out_p = np.empty(used, np.int64)
    out_c = np.empty(used, np.int64)
    out_s = np.empty(used)
    out_phi = np.empty(used)
    out_iy = np.empty(used)
    out_ix = np.empty(used)
    msk = cap - 1
    for u in range(used):
        key = key_order[u]
        j = _slot(key, bits)
        while keys[j] != key:
            j = (j + 1) & msk
        out_k[u] = key
        out_p[u] = pix[j]
        out_c[u] = cnt[j]
        out_s[u] = sec[j]
        out_phi[u] = sphi[j]
        out_iy[u] = siy[j]
        out_ix[u] = six[j]
    return out_k, out_p, out_c, out_s, out_phi, out_iy, out_ix


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
        return Partials(*out)

    results = list(pool.map(run, tile_list)) if pool is not None else [run(t) for t in tile_list]
    return Partials.concat(results)


# -- the (voxel, pass) accumulator -----------------------------------------------------------------


@njit(cache=True)
def _fold(
    pkeys, ppix, pcnt, psec, pphi, piy, pix_, spread,
    vkeys, vmin, vbits, rkeys, rn, rrow, rbits, acc_i, acc_f, nrows,
):  # fmt: skip
    """Fold a batch of partials into the voxel-minimum table and the (voxel, n) rows.

    The batch must hold whole frame-chunks later in rotation than every earlier batch, so a
    voxel's smallest partial mean is final once its first batch has been folded.
    """
    vmask = (1 << vbits) - 1
    rmask = (1 << rbits) - 1
    m = pkeys.size
    # 1. smallest partial mean phi per voxel
    for i in range(m):
        key = pkeys[i]
        t = pphi[i] / ppix[i]
        j = _slot(key, vbits)
        while vkeys[j] != _EMPTY and vkeys[j] != key:
            j = (j + 1) & vmask
        if vkeys[j] == _EMPTY:
            vkeys[j] = key
            vmin[j] = t
        elif t < vmin[j]:
            vmin[j] = t
    # 2. pass index and accumulation
    for i in range(m):
        key = pkeys[i]
        t = pphi[i] / ppix[i]
        j = _slot(key, vbits)
        while vkeys[j] != key:
            j = (j + 1) & vmask
        n = np.int64(np.floor((t - vmin[j]) / spread))
        h = np.uint64(key) * _GOLDEN + np.uint64(n) * np.uint64(0xC2B2AE3D27D4EB4F)
        r = np.int64(h >> np.uint64(64 - rbits))
        while rkeys[r] != _EMPTY and not (rkeys[r] == key and rn[r] == n):
            r = (r + 1) & rmask
        if rkeys[r] == _EMPTY:
            rkeys[r] = key
            rn[r] = n
            rrow[r] = nrows
            nrows += 1
        row = rrow[r]
        acc_i[row, 0] += ppix[i]
        acc_i[row, 1] += pcnt[i]
        acc_f[row, 0] += psec[i]
        acc_f[row, 1] += pphi[i]
        acc_f[row, 2] += piy[i]
        acc_f[row, 3] += pix_[i]
    return nrows


@njit(cache=True)
def _rehash_voxels(vkeys, vmin, bits):
    cap = 1 << bits
    nk = np.full(cap, _EMPTY, np.int64)
    nm = np.zeros(cap)
    mask = cap - 1
    for i in range(vkeys.size):
        if vkeys[i] == _EMPTY:
            continue
        j = _slot(vkeys[i], bits)
        while nk[j] != _EMPTY:
            j = (j + 1) & mask
        nk[j] = vkeys[i]
        nm[j] = vmin[i]
    return nk, nm


@njit(cache=True)
def _rehash_rows(rkeys, rn, rrow, bits):
    cap = 1 << bits
    nk = np.full(cap, _EMPTY, np.int64)
    nn = np.zeros(cap, np.int64)
    nr = np.zeros(cap, np.int64)
    mask = cap - 1
    for i in range(rkeys.size):
        if rkeys[i] == _EMPTY:
            continue
        h = np.uint64(rkeys[i]) * _GOLDEN + np.uint64(rn[i]) * np.uint64(0xC2B2AE3D27D4EB4F)
        j = np.int64(h >> np.uint64(64 - bits))
        while nk[j] != _EMPTY:
            j = (j + 1) & mask
        nk[j] = rkeys[i]
        nn[j] = rn[i]
        nr[j] = rrow[i]
    return nk, nn, nr


class Accumulator:
    """(voxel, rotation pass) rows of the integrated table, grown as partials arrive."""

    def __init__(self, max_spread: float):
        if not (max_spread > 0 and math.isfinite(max_spread)):
            raise InputError(f"--max_spread must be a positive number of degrees, is {max_spread}")
        self.spread = float(max_spread)
        self.vbits = 16
        self.vkeys = np.full(1 << self.vbits, _EMPTY, np.int64)
        self.vmin = np.zeros(1 << self.vbits)
        self.nvox = 0
        self.rbits = 16
        self.rkeys = np.full(1 << self.rbits, _EMPTY, np.int64)
        self.rn = np.zeros(1 << self.rbits, np.int64)
        self.rrow = np.zeros(1 << self.rbits, np.int64)
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
            self.vkeys, self.vmin = _rehash_voxels(self.vkeys, self.vmin, self.vbits)
        while 2 * (self.nrows + m) > (1 << self.rbits):
            self.rbits += 1
            self.rkeys, self.rn, self.rrow = _rehash_rows(
                self.rkeys, self.rn, self.rrow, self.rbits
            )
        if self.nrows + m > len(self.acc_i):
            size = max(2 * len(self.acc_i), self.nrows + m)
            self.acc_i = np.resize(self.acc_i, (size, 2))
            self.acc_f = np.resize(self.acc_f, (size, 4))
            self.acc_i[self.nrows :] = 0
            self.acc_f[self.nrows :] = 0
        self.nrows = _fold(
            p.keys, p.pixels, p.counts, p.seconds, p.phi, p.iy, p.ix, self.spread,
            self.vkeys, self.vmin, self.vbits, self.rkeys, self.rn, self.rrow, self.rbits,
            self.acc_i, self.acc_f, self.nrows,
        )  # fmt: skip
        self.nvox = int(np.count_nonzero(self.vkeys != _EMPTY))

    def table(self, ndiv) -> HKLTable:
        """The integrated table, sorted by (h, k, l, n) as mdx2's groupby."""
        used = self.rkeys != _EMPTY
        keys, n, rows = self.rkeys[used], self.rn[used], self.rrow[used]
        HKL = unpack(keys)
        order = np.lexsort((n, HKL[:, 2], HKL[:, 1], HKL[:, 0]))
        HKL, n, rows = HKL[order], n[order], rows[order]
        ai, af = self.acc_i[rows], self.acc_f[rows]
        pixels = ai[:, 0]
        cols = hkl_from_voxels(HKL, ndiv)
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
    if hmax * max(ndiv) >= _OFF - 1:
        raise InputError(
            f"--subdivide {list(ndiv)}: Miller indices up to {hmax:.0f} give voxel indices beyond "
            f"+-{_OFF - 1}"
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
