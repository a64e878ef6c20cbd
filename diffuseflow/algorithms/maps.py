"""map: the merged asymmetric unit expanded by symmetry onto a dense h, k, l grid, and the
statistics the QC page shows (isotropic average, CC1/2 and multiplicity against resolution).

As mdx2 1.0.5's ``map``: grid points ``arange(round(min * ndiv), round(max * ndiv) + 1) / ndiv``
per axis, each mapped to the asymmetric unit (lowest-numbered Laue operator) and looked up in
the merged table; NaN where there is no merged value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffuseflow.errors import InputError
from diffuseflow.io.tables import HKLTable, pack_voxels


def grid_axes(limits, ndiv):
    hmin, hmax, kmin, kmax, lmin, lmax = limits
    out = []
    for (lo, hi), d in zip(((hmin, hmax), (kmin, kmax), (lmin, lmax)), ndiv, strict=True):
        if lo > hi:
            raise InputError(f"--limits: minimum {lo:g} is above maximum {hi:g}")
        out.append(np.arange(int(np.round(lo * d)), int(np.round(hi * d)) + 1))
    return out  # integer voxel indices per axis


def default_limits(table: HKLTable, laue) -> list[float]:
    """+-the largest |h|, |k|, |l| of the merged voxels after symmetry expansion (a box
    holding every observed voxel)."""
    HKL = table.voxels()[np.isfinite(table["intensity"])]
    if laue is not None:
        expanded = np.concatenate([HKL @ np.rint(op).astype(np.int64) for op in laue.operators])
    else:
        expanded = np.concatenate([HKL, -HKL])
    top = np.abs(expanded).max(axis=0) / np.asarray(table.ndiv)
    return [float(v) for t in top for v in (-t, t)]


def lookup(table: HKLTable, HKL: np.ndarray, column: str) -> np.ndarray:
    """Values of ``column`` at voxel indices HKL (n, 3); NaN where the table has none."""
    keys = pack_voxels(table.voxels())
    order = np.argsort(keys)
    skeys = keys[order]
    want = pack_voxels(HKL)
    pos = np.clip(np.searchsorted(skeys, want), 0, max(len(skeys) - 1, 0))
    found = skeys[pos] == want if len(skeys) else np.zeros(len(want), bool)
    values = table[column][order].astype(np.float64)
    return np.where(found, values[pos], np.nan)


def dense_map(table: HKLTable, laue, limits, columns=("intensity",), p1_mode=None):
    """{column: (nh, nk, nl) array} and the axes (h, k, l values) of the symmetry-expanded
    map. ``laue``: LaueSymmetry, or None with ``p1_mode`` (a function HKL -> (asu, op))."""
    axes_idx = grid_axes(limits, table.ndiv)
    shape = tuple(len(a) for a in axes_idx)
    H, K, L = np.meshgrid(*axes_idx, indexing="ij")
    HKL = np.stack([H.ravel(), K.ravel(), L.ravel()], 1)
    asu, _ = laue.to_asu(HKL) if laue is not None else p1_mode(HKL)
    out = {c: lookup(table, asu, c).reshape(shape) for c in columns}
    axes = [a / d for a, d in zip(axes_idx, table.ndiv, strict=True)]
    return out, axes


# -- statistics -----------------------------------------------------------------------------------


@dataclass
class ShellStats:
    s_mid: np.ndarray  #: 1/d at the shell centres (1/Angstrom)
    mean_intensity: np.ndarray
    cc_half: np.ndarray
    voxels: np.ndarray
    multiplicity: np.ndarray


def shells(s: np.ndarray, n: int = 20):
    ok = np.isfinite(s)
    edges = np.quantile(s[ok], np.linspace(0, 1, n + 1)) if ok.any() else np.zeros(n + 1)
    idx = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, n - 1)
    return edges, idx


def pearson(a, b) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return float("nan")
    a, b = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def shell_stats(table: HKLTable, n_shells: int = 20) -> ShellStats:
    """Per resolution shell (equal numbers of merged voxels): mean intensity, CC1/2 of the
    two halves (if the table has them), voxel count and mean multiplicity."""
    I = table["intensity"].astype(float)  # noqa: E741
    ok = np.isfinite(I)
    s = table["s"].astype(float)
    edges, idx = shells(s[ok], n_shells)
    I = I[ok]  # noqa: E741
    cnt = table["count"][ok].astype(float)
    halves = "group_0_intensity" in table
    g0 = table["group_0_intensity"][ok].astype(float) if halves else None
    g1 = table["group_1_intensity"][ok].astype(float) if halves else None
    mean, cc, nvox, mult = (np.full(n_shells, np.nan) for _ in range(4))
    for j in range(n_shells):
        sel = idx == j
        nvox[j] = sel.sum()
        if not sel.any():
            continue
        mean[j] = I[sel].mean()
        mult[j] = cnt[sel].mean()
        if halves:
            cc[j] = pearson(g0[sel], g1[sel])
    return ShellStats(0.5 * (edges[1:] + edges[:-1]), mean, cc, nvox, mult)


def overall_cc_half(table: HKLTable) -> float:
    if "group_0_intensity" not in table:
        return float("nan")
    return pearson(
        table["group_0_intensity"].astype(float), table["group_1_intensity"].astype(float)
    )
