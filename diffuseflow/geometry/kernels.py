"""Compiled per-pixel kernels (numba): Miller index, fractional offset, Mahalanobis distance.

A frame's pixels are independent, so rows run in parallel (``prange``); results never depend
on the number of threads. Rounding is half-to-even (``np.rint``), as numpy's ``round`` in mdx2.

Two ways to get a pixel's hkl:

* exact: hkl = M(phi) . q, with q = s1 - s0 precomputed per pixel (physical mode);
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
def _lookup(table, hmax, H, K, L):
    if abs(H) > hmax or abs(K) > hmax or abs(L) > hmax:
        return 0
    return table[H + hmax, K + hmax, L + hmax]


@njit(inline="always")
def _grid_hkl(gh, gk, gl, p0, wp, y0, wy, x0, wx):
    h = 0.0
    k = 0.0
    l = 0.0  # noqa: E741
    for dp in range(2):
        fp = wp if dp else 1.0 - wp
        for dy in range(2):
            fy = wy if dy else 1.0 - wy
            for dx in range(2):
                w = fp * fy * (wx if dx else 1.0 - wx)
                h += w * gh[p0 + dp, y0 + dy, x0 + dx]
                k += w * gk[p0 + dp, y0 + dy, x0 + dx]
                l += w * gl[p0 + dp, y0 + dy, x0 + dx]  # noqa: E741
    return h, k, l


@njit(parallel=True, cache=True)
def hkl_image(q, M, out):
    """out[j, i, :] = M . q[j, i, :] for one frame."""
    ny, nx = out.shape[0], out.shape[1]
    for j in prange(ny):
        for i in range(nx):
            for r in range(3):
                out[j, i, r] = M[r, 0] * q[j, i, 0] + M[r, 1] * q[j, i, 1] + M[r, 2] * q[j, i, 2]


@njit(parallel=True, cache=True)
def peak_mask_exact(q, M, r0, P, allowed, hmax, cutoff2, out):
    """out[j, i] = allowed(HKL) and d2 < cutoff2, with exact hkl = M . q[j, i]."""
    ny, nx = out.shape
    for j in prange(ny):
        for i in range(nx):
            qx = q[j, i, 0]
            qy = q[j, i, 1]
            qz = q[j, i, 2]
            h = M[0, 0] * qx + M[0, 1] * qy + M[0, 2] * qz
            k = M[1, 0] * qx + M[1, 1] * qy + M[1, 2] * qz
            l = M[2, 0] * qx + M[2, 1] * qy + M[2, 2] * qz  # noqa: E741
            H, K, L, d2 = _offset_d2(h, k, l, r0, P)
            out[j, i] = d2 < cutoff2 and _lookup(allowed, hmax, H, K, L) != 0


@njit(parallel=True, cache=True)
def peak_mask_grid(gh, gk, gl, p0, wp, y0, wy, x0, wx, r0, P, allowed, hmax, cutoff2, out):
    """As peak_mask_exact, with hkl interpolated trilinearly from mdx2's lookup grid.

    (p0, wp): grid cell and weight along phi for this frame; (y0, wy), (x0, wx): per row/column.
    """
    ny, nx = out.shape
    for j in prange(ny):
        for i in range(nx):
            h, k, l = _grid_hkl(gh, gk, gl, p0, wp, y0[j], wy[j], x0[i], wx[i])  # noqa: E741
            H, K, L, d2 = _offset_d2(h, k, l, r0, P)
            out[j, i] = d2 < cutoff2 and _lookup(allowed, hmax, H, K, L) != 0


@njit(parallel=True, cache=True)
def bragg_image(q, M, r0, P, intensity, hmax, d2max, out):
    """Expected Bragg photons: intensity[HKL] * exp(-d2 / 2) where d2 < d2max (simulator)."""
    ny, nx = out.shape
    for j in prange(ny):
        for i in range(nx):
            qx = q[j, i, 0]
            qy = q[j, i, 1]
            qz = q[j, i, 2]
            h = M[0, 0] * qx + M[0, 1] * qy + M[0, 2] * qz
            k = M[1, 0] * qx + M[1, 1] * qy + M[1, 2] * qz
            l = M[2, 0] * qx + M[2, 1] * qy + M[2, 2] * qz  # noqa: E741
            H, K, L, d2 = _offset_d2(h, k, l, r0, P)
            v = 0.0
            if d2 < d2max:
                v = _lookup(intensity, hmax, H, K, L) * np.exp(-0.5 * d2)
            out[j, i] = v


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
