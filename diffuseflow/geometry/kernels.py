"""Compiled per-pixel kernels (numba): Miller index, fractional offset, Mahalanobis distance.

A frame's pixels are independent, so rows run in parallel (``prange``); results never depend
on the number of threads. Rounding is half-to-even (``np.rint``), as numpy's ``round`` in mdx2.

Two ways to get a pixel's hkl:

* exact: hkl = M(phi) . q, with q = s1 - s0 precomputed per pixel as three (ny, nx) planes
  (physical mode);
* grid: trilinear interpolation of mdx2's coarse lookup grid (mdx2-compatible mode).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(inline="always")
def _offset_d2(h, k, l, r0, P):  # noqa: E741
    """Nearest integer (H, K, L) and squared Mahalanobis distance of (h, k, l) - HKL - r0."""
    H = np.rint(h)
    K = np.rint(k)
    L = np.rint(l)
    a = h - H - r0[0]
    b = k - K - r0[1]
    c = l - L - r0[2]
    d2 = (
        P[0, 0] * a * a
        + P[1, 1] * b * b
        + P[2, 2] * c * c
        + 2.0 * (P[0, 1] * a * b + P[0, 2] * a * c + P[1, 2] * b * c)
    )
    return int(H), int(K), int(L), d2


@njit(inline="always")
def _d2(h, k, l, r0, P):  # noqa: E741
    """Squared Mahalanobis distance of (h, k, l) - round(h, k, l) - r0 (no int conversion)."""
    a = h - np.rint(h) - r0[0]
    b = k - np.rint(k) - r0[1]
    c = l - np.rint(l) - r0[2]
    return (
        P[0, 0] * a * a
        + P[1, 1] * b * b
        + P[2, 2] * c * c
        + 2.0 * (P[0, 1] * a * b + P[0, 2] * a * c + P[1, 2] * b * c)
    )


@njit(inline="always")
def _lookup(table, hmax, H, K, L):
    if abs(H) > hmax or abs(K) > hmax or abs(L) > hmax:
        return 0
    return table[H + hmax, K + hmax, L + hmax]


@njit(parallel=True, cache=True)
def peak_mask_exact(q, M, r0, P, allowed, hmax, cutoff2, out):
    """out[j, i] = allowed(HKL) and d2 < cutoff2, with exact hkl = M . q[:, j, i]: every pixel
    computed (the reference ``peak_mask_tiled`` reproduces bit for bit; mask_peaks runs that).

    ``q`` holds the scattering vector as three planes (3, ny, nx): with unit-stride rows the
    distance loop vectorises (~3x faster than interleaved xyz). The reflection lookup, with
    its float -> int conversions, runs in a second pass only for pixels inside the ellipsoid.
    """
    ny, nx = out.shape
    m00, m01, m02 = M[0, 0], M[0, 1], M[0, 2]
    m10, m11, m12 = M[1, 0], M[1, 1], M[1, 2]
    m20, m21, m22 = M[2, 0], M[2, 1], M[2, 2]
    for j in prange(ny):
        qx = q[0, j]
        qy = q[1, j]
        qz = q[2, j]
        row = out[j]
        for i in range(nx):
            h = m00 * qx[i] + m01 * qy[i] + m02 * qz[i]
            k = m10 * qx[i] + m11 * qy[i] + m12 * qz[i]
            l = m20 * qx[i] + m21 * qy[i] + m22 * qz[i]  # noqa: E741
            row[i] = _d2(h, k, l, r0, P) < cutoff2
        for i in range(nx):
            if row[i]:
                h = m00 * qx[i] + m01 * qy[i] + m02 * qz[i]
                k = m10 * qx[i] + m11 * qy[i] + m12 * qz[i]
                l = m20 * qx[i] + m21 * qy[i] + m22 * qz[i]  # noqa: E741
                H = int(np.rint(h))
                K = int(np.rint(k))
                L = int(np.rint(l))
                row[i] = _lookup(allowed, hmax, H, K, L) != 0


def pixel_tiles(q: np.ndarray, tile: int):
    """Centres and radii of tile x tile blocks of the scattering-vector planes q (3, ny, nx):
    centre = the mean q of the block, radius = the largest |q - centre| in it (grown by a
    relative 1e-9, so that rounding cannot make the bound of ``peak_mask_tiled`` too tight).
    Computed once per sweep; blocks at the far edges are cut by the detector."""
    _, ny, nx = q.shape
    nty, ntx = -(-ny // tile), -(-nx // tile)
    centre = np.empty((3, nty, ntx))
    radius = np.empty((nty, ntx))
    _pixel_tiles(q, tile, centre, radius)
    return centre, radius


@njit(parallel=True, cache=True)
def _pixel_tiles(q, tile, centre, radius):
    _, ny, nx = q.shape
    nty, ntx = radius.shape
    for tj in prange(nty):
        j0 = tj * tile
        j1 = min(j0 + tile, ny)
        for ti in range(ntx):
            i0 = ti * tile
            i1 = min(i0 + tile, nx)
            n = (j1 - j0) * (i1 - i0)
            for c in range(3):
                total = 0.0
                for j in range(j0, j1):
                    for i in range(i0, i1):
                        total += q[c, j, i]
                centre[c, tj, ti] = total / n
            r2 = 0.0
            for j in range(j0, j1):
                for i in range(i0, i1):
                    d = 0.0
                    for c in range(3):
                        e = q[c, j, i] - centre[c, tj, ti]
                        d += e * e
                    r2 = max(r2, d)
            radius[tj, ti] = np.sqrt(r2) * (1 + 1e-9)


@njit(parallel=True, cache=True)
def peak_mask_tiled(q, centre, radius, tile, M, r0, P, extent, allowed, hmax, cutoff2, out):
    """peak_mask_exact, bounding tile x tile blocks first: the same mask, bit for bit.

    Most pixels are far from every ellipsoid. A block's hkl lie within |M_a| * radius of the
    centre's along each axis a (Cauchy-Schwarz), and inside an ellipsoid d2 < cutoff2 the
    offset along a is at most extent[a] = sqrt(cutoff2 * inv(P)[a, a]); so if, along any axis,
    the centre's offset from every integer + r0 exceeds extent + |M_a| * radius, no pixel of
    the block can be masked and its pixels are not computed (nor their q read: the q planes
    are the memory traffic that bounds the exact kernel). Blocks that may hold masked pixels
    are computed pixel by pixel with exactly peak_mask_exact's arithmetic.
    """
    ny, nx = out.shape
    nty, ntx = radius.shape
    m00, m01, m02 = M[0, 0], M[0, 1], M[0, 2]
    m10, m11, m12 = M[1, 0], M[1, 1], M[1, 2]
    m20, m21, m22 = M[2, 0], M[2, 1], M[2, 2]
    n0 = np.sqrt(m00 * m00 + m01 * m01 + m02 * m02)
    n1 = np.sqrt(m10 * m10 + m11 * m11 + m12 * m12)
    n2 = np.sqrt(m20 * m20 + m21 * m21 + m22 * m22)
    e0, e1, e2 = extent[0] + 1e-9, extent[1] + 1e-9, extent[2] + 1e-9
    for tj in prange(nty):
        j0 = tj * tile
        j1 = min(j0 + tile, ny)
        for j in range(j0, j1):
            out[j, :] = False
        cx = centre[0, tj]
        cy = centre[1, tj]
        cz = centre[2, tj]
        rad = radius[tj]
        # the bound for a whole row of blocks first (a branch-free loop that vectorises),
        # then the pixels of the few blocks it keeps
        near = np.empty(ntx, np.bool_)
        for ti in range(ntx):
            hc = m00 * cx[ti] + m01 * cy[ti] + m02 * cz[ti] - r0[0]
            kc = m10 * cx[ti] + m11 * cy[ti] + m12 * cz[ti] - r0[1]
            lc = m20 * cx[ti] + m21 * cy[ti] + m22 * cz[ti] - r0[2]
            near[ti] = (
                (np.abs(hc - np.rint(hc)) <= e0 + n0 * rad[ti])
                & (np.abs(kc - np.rint(kc)) <= e1 + n1 * rad[ti])
                & (np.abs(lc - np.rint(lc)) <= e2 + n2 * rad[ti])
            )
        for ti in range(ntx):
            if not near[ti]:
                continue
            i0 = ti * tile
            i1 = min(i0 + tile, nx)
            for j in range(j0, j1):
                qx = q[0, j]
                qy = q[1, j]
                qz = q[2, j]
                row = out[j]
                for i in range(i0, i1):
                    h = m00 * qx[i] + m01 * qy[i] + m02 * qz[i]
                    k = m10 * qx[i] + m11 * qy[i] + m12 * qz[i]
                    l = m20 * qx[i] + m21 * qy[i] + m22 * qz[i]  # noqa: E741
                    if _d2(h, k, l, r0, P) < cutoff2:
                        H = int(np.rint(h))
                        K = int(np.rint(k))
                        L = int(np.rint(l))
                        row[i] = _lookup(allowed, hmax, H, K, L) != 0


@njit(parallel=True, cache=True)
def peak_mask_grid(gh, gk, gl, p0, wp, y0, wy, x0, wx, r0, P, allowed, hmax, cutoff2, out):
    """As peak_mask_exact, with hkl interpolated trilinearly from mdx2's lookup grid.

    (p0, wp): grid cell and weight along phi for this frame; (y0, wy), (x0, wx): per row/column.
    Trilinear interpolation is separable: the grid is interpolated in phi and y once per row,
    leaving a 1-D interpolation along x per pixel (same values as the 8-point formula up to
    rounding in the last bit).
    """
    ny, nx = out.shape
    nxg = gh.shape[2]
    for j in prange(ny):
        fy = wy[j]
        ya = y0[j]
        rh = np.empty(nxg)
        rk = np.empty(nxg)
        rl = np.empty(nxg)
        for c in range(nxg):
            rh[c] = (1.0 - wp) * ((1.0 - fy) * gh[p0, ya, c] + fy * gh[p0, ya + 1, c]) + wp * (
                (1.0 - fy) * gh[p0 + 1, ya, c] + fy * gh[p0 + 1, ya + 1, c]
            )
            rk[c] = (1.0 - wp) * ((1.0 - fy) * gk[p0, ya, c] + fy * gk[p0, ya + 1, c]) + wp * (
                (1.0 - fy) * gk[p0 + 1, ya, c] + fy * gk[p0 + 1, ya + 1, c]
            )
            rl[c] = (1.0 - wp) * ((1.0 - fy) * gl[p0, ya, c] + fy * gl[p0, ya + 1, c]) + wp * (
                (1.0 - fy) * gl[p0 + 1, ya, c] + fy * gl[p0 + 1, ya + 1, c]
            )
        row = out[j]
        for i in range(nx):
            xa = x0[i]
            fx = wx[i]
            h = (1.0 - fx) * rh[xa] + fx * rh[xa + 1]
            k = (1.0 - fx) * rk[xa] + fx * rk[xa + 1]
            l = (1.0 - fx) * rl[xa] + fx * rl[xa + 1]  # noqa: E741
            row[i] = _d2(h, k, l, r0, P) < cutoff2
        for i in range(nx):
            if row[i]:
                xa = x0[i]
                fx = wx[i]
                H = int(np.rint((1.0 - fx) * rh[xa] + fx * rh[xa + 1]))
                K = int(np.rint((1.0 - fx) * rk[xa] + fx * rk[xa + 1]))
                L = int(np.rint((1.0 - fx) * rl[xa] + fx * rl[xa + 1]))
                row[i] = _lookup(allowed, hmax, H, K, L) != 0


@njit(parallel=True, cache=True)
def bragg_image(q, M, r0, P, intensity, hmax, d2max, out):
    """Expected Bragg photons: intensity[HKL] * exp(-d2 / 2) where d2 < d2max (simulator)."""
    ny, nx = out.shape
    for j in prange(ny):
        for i in range(nx):
            qx = q[0, j, i]
            qy = q[1, j, i]
            qz = q[2, j, i]
            h = M[0, 0] * qx + M[0, 1] * qy + M[0, 2] * qz
            k = M[1, 0] * qx + M[1, 1] * qy + M[1, 2] * qz
            l = M[2, 0] * qx + M[2, 1] * qy + M[2, 2] * qz  # noqa: E741
            H, K, L, d2 = _offset_d2(h, k, l, r0, P)
            v = 0.0
            if d2 < d2max:
                v = _lookup(intensity, hmax, H, K, L) * np.exp(-0.5 * d2)
            out[j, i] = v


@njit(parallel=True, cache=True)
def pixel_to_lab(x, y, px, py, origin, f, s, n, parallax, mu, t0, out):
    """Continuous pixel coordinates (x fast, y slow) -> lab positions (mm), out (N, 3).

    With ``parallax``, dxtbx's approximate inverse correction (ParallaxCorrectedPxMmStrategy):
    u = unit vector to the uncorrected point, cos t = u.n, mean depth
    l = 1/mu - (t0/cos t + 1/mu) exp(-mu t0 / cos t), x_mm -= (u.f) l, y_mm -= (u.s) l.
    """
    for e in prange(x.shape[0]):
        v = _lab(x[e], y[e], px, py, origin, f, s, n, parallax, mu, t0)
        out[e, 0], out[e, 1], out[e, 2] = v


@njit(inline="always")
def _lab(x, y, px, py, origin, f, s, n, parallax, mu, t0):
    xm = x * px
    ym = y * py
    if parallax:
        v0 = origin[0] + xm * f[0] + ym * s[0]
        v1 = origin[1] + xm * f[1] + ym * s[1]
        v2 = origin[2] + xm * f[2] + ym * s[2]
        norm = np.sqrt(v0 * v0 + v1 * v1 + v2 * v2)
        u0, u1, u2 = v0 / norm, v1 / norm, v2 / norm
        cos_t = u0 * n[0] + u1 * n[1] + u2 * n[2]
        depth = 1.0 / mu - (t0 / cos_t + 1.0 / mu) * np.exp(-mu * t0 / cos_t)
        xm -= (u0 * f[0] + u1 * f[1] + u2 * f[2]) * depth
        ym -= (u0 * s[0] + u1 * s[1] + u2 * s[2]) * depth
    return (
        origin[0] + xm * f[0] + ym * s[0],
        origin[1] + xm * f[1] + ym * s[1],
        origin[2] + xm * f[2] + ym * s[2],
    )


@njit(parallel=True, cache=True)
def scattering_planes(offset, px, py, origin, f, s, n, parallax, mu, t0, wavelength, s0, out):
    """out (3, ny, nx) = s1 - s0 of every pixel (centre at index + offset), in one pass:
    the lab position of ``pixel_to_lab``, then s1 = xyz / (|xyz| wavelength), with the same
    operations in the same order as the numpy expression (|xyz| summed as (x^2 + y^2) + z^2,
    as numpy's norm), so the planes are identical to it, bit for bit."""
    _, ny, nx = out.shape
    for j in prange(ny):
        y = j + offset
        for i in range(nx):
            v0, v1, v2 = _lab(i + offset, y, px, py, origin, f, s, n, parallax, mu, t0)
            scale = np.sqrt((v0 * v0 + v1 * v1) + v2 * v2) * wavelength
            out[0, j, i] = v0 / scale - s0[0]
            out[1, j, i] = v1 / scale - s0[1]
            out[2, j, i] = v2 / scale - s0[2]


def grid_cells(axis: np.ndarray, coords: np.ndarray):
    """Grid cell index and weight of each coordinate: mdx2's clamped 1-D linear interpolation
    of the axis to a fractional index, split into (floor, fraction) with the floor kept
    inside [0, n - 2]."""
    frac = np.interp(coords, axis, np.arange(len(axis), dtype=float))
    i0 = np.clip(np.floor(frac).astype(np.int64), 0, max(len(axis) - 2, 0))
    return i0, frac - i0


def interpolate_grid(grid_hkl: np.ndarray, axes, phi, iy, ix) -> np.ndarray:
    """Trilinear interpolation of a (nphi, ny_g, nx_g, 3) hkl grid at points (phi, iy, ix)."""
    (p0, wp), (y0, wy), (x0, wx) = (
        grid_cells(a, np.asarray(c, float)) for a, c in zip(axes, (phi, iy, ix), strict=True)
    )
    out = np.zeros(np.shape(p0) + (3,))
    for dp in (0, 1):
        fp = wp if dp else 1 - wp
        for dy in (0, 1):
            fy = wy if dy else 1 - wy
            for dx in (0, 1):
                w = fp * fy * (wx if dx else 1 - wx)
                out += w[..., None] * grid_hkl[p0 + dp, y0 + dy, x0 + dx]
    return out
