"""merge: one intensity per asymmetric-unit voxel from the corrected observations of one or
more sweeps (every observation has scale 1 here; scaling is a later step).

mdx2 1.0.5 (``--mdx2_compat``): inverse-variance mean with each observation's own error,
sqrt(counts) / seconds / C, and one pass of outlier rejection that drops observations more than
``outlier`` sigma *below* the merged value. Two faults follow: at low counts an observation
that fluctuated low gets a small error and a large weight, so the merged mean is biased low
(and observations with 0 counts have 0 error and are dropped); high outliers (zingers, Bragg
tails) are kept.

Physical mode weights by the *expected* counts: an observation's variance is
(I C + B) / (t C^2) + (sigma_B / C)^2 with I the voxel's merged intensity (iterated from the
pooled estimate sum(counts - B t) / sum(C t)), so the weights do not depend on the
observation's own noise. The background error is shared by the observations of a voxel (they
see the same background bins), so it enters the merged error as fully correlated, not
averaged down. Outliers are rejected on both sides. Tables without the columns this needs
(mdx2's) are merged the mdx2 way, with a note.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from diffuseflow.errors import InputError
from diffuseflow.io.tables import HKLTable, hkl_from_voxels, pack_voxels, unpack_voxels

SPLITS = ("randomHalf", "Friedel")
MODEL_COLUMNS = ("seconds", "correction", "background", "background_error")


@dataclass
class Observations:
    """Corrected observations of all sweeps, grouped by voxel (``ih`` -> ``voxels`` row)."""

    voxels: np.ndarray  #: (m, 3) unique ASU voxel indices, lexicographic order
    ih: np.ndarray  #: voxel row of every observation
    intensity: np.ndarray
    error: np.ndarray
    s: np.ndarray
    op: np.ndarray
    batch: np.ndarray
    model: dict | None  #: MODEL_COLUMNS arrays, or None (mdx2's tables)
    ndiv: tuple
    #: factor on the counting variances: 1 for photon counts; an integrating detector's
    #: values in ADU (gain != 1) scatter more, as :func:`variance_scale` measures
    variance_scale: float = 1.0


def gather(tables_: list[HKLTable], names: list[str]) -> Observations:
    ndiv = tables_[0].ndiv
    for t, name in zip(tables_, names, strict=True):
        if t.ndiv != ndiv:
            raise InputError(
                f"{name}: subdivision {list(t.ndiv)} differs from {names[0]}'s {list(ndiv)}"
            )
    HKL = np.concatenate([t.voxels() for t in tables_])
    # one int64 key per voxel sorts as the (H, K, L) rows do, and sorts ~10x faster
    keys, ih = np.unique(pack_voxels(HKL), return_inverse=True)
    voxels = unpack_voxels(keys)
    have_model = all(all(c in t for c in MODEL_COLUMNS) for t in tables_)

    def col(name, dtype=float):
        return np.concatenate([t[name].astype(dtype) for t in tables_])

    return Observations(
        voxels=voxels,
        ih=ih.reshape(-1),
        intensity=col("intensity"),
        error=col("intensity_error"),
        s=col("s") if all("s" in t for t in tables_) else np.full(len(HKL), np.nan),
        op=col("op", np.int64),
        batch=np.concatenate([np.full(len(t), i) for i, t in enumerate(tables_)]),
        model={c: col(c) for c in MODEL_COLUMNS} if have_model else None,
        ndiv=ndiv,
    )


def _bincount(ih, w, m):
    return np.bincount(ih, weights=w, minlength=m)


def merge_mdx2(obs: Observations, use: np.ndarray):
    """mdx2's ScaledData.merge: (I, sigma, count) per voxel; NaN where nothing is used."""
    m = len(obs.voxels)
    use = use & np.isfinite(obs.intensity) & np.isfinite(obs.error) & (obs.error != 0)
    ih = obs.ih[use]
    w = 1.0 / obs.error[use].astype(np.float64) ** 2
    count = np.bincount(ih, minlength=m)
    wsum = _bincount(ih, w, m)
    isum = _bincount(ih, w * obs.intensity[use], m)
    with np.errstate(invalid="ignore", divide="ignore"):
        intensity = np.where(count > 0, isum / wsum, np.nan)
        sigma = np.where(count > 0, 1.0 / np.sqrt(wsum), np.nan)
    return intensity, sigma, count, use


def expected_variance(intensity, t, C, B, eB, k=1.0):
    """(Poisson part, background part) of the variance of corrected observations whose true
    intensity is ``intensity``: from the counts expected, t (C I + B), not those observed;
    k scales the counting variance (see variance_scale)."""
    expected_rate = np.maximum(intensity * C + B, 1.0 / t)  # at least 1 count expected
    return k * expected_rate / (t * C**2), k * (eB / C) ** 2


def observation_variance(obs: Observations, merged_i: np.ndarray):
    """expected_variance of each observation given its voxel's merged intensity."""
    md = obs.model
    t, C, B, eB = md["seconds"], md["correction"], md["background"], md["background_error"]
    return expected_variance(merged_i[obs.ih], t, C, B, eB, obs.variance_scale)


def merge_expected(obs: Observations, use: np.ndarray, iterations: int = 3):
    """Physical merge: weights from expected counts (see module docstring)."""
    m = len(obs.voxels)
    md = obs.model
    use = (
        use
        & np.isfinite(obs.intensity)
        & (md["seconds"] > 0)
        & (md["correction"] > 0)
        & np.isfinite(md["background"])
    )
    ih = obs.ih[use]
    t, C = md["seconds"][use], md["correction"][use]
    count = np.bincount(ih, minlength=m)
    with np.errstate(invalid="ignore", divide="ignore"):
        # pooled estimate: sum(counts - B t) / sum(C t), independent of the noise weights
        merged = _bincount(ih, t * C * obs.intensity[use], m) / _bincount(ih, t * C, m)
    merged = np.where(count > 0, merged, np.nan)
    sub = _subset(obs, use)
    for _ in range(iterations):
        poisson, bkg = observation_variance(sub, np.nan_to_num(merged))
        w = 1.0 / (poisson + bkg)
        wsum = _bincount(ih, w, m)
        with np.errstate(invalid="ignore", divide="ignore"):
            merged = np.where(count > 0, _bincount(ih, w * sub.intensity, m) / wsum, np.nan)
    poisson, bkg = observation_variance(sub, np.nan_to_num(merged))
    w = 1.0 / (poisson + bkg)
    wsum = _bincount(ih, w, m)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = _bincount(ih, w * w * poisson, m) / wsum**2
        var += (_bincount(ih, w * np.sqrt(bkg), m) / wsum) ** 2
        sigma = np.where(count > 0, np.sqrt(var), np.nan)
    return merged, sigma, count, use


def _subset(obs: Observations, use: np.ndarray) -> Observations:
    return Observations(
        obs.voxels, obs.ih[use], obs.intensity[use], obs.error[use], obs.s[use], obs.op[use],
        obs.batch[use], {k: v[use] for k, v in obs.model.items()} if obs.model else None,
        obs.ndiv, obs.variance_scale,
    )  # fmt: skip


def residuals(obs: Observations, merged_i, physical: bool):
    if physical:
        poisson, bkg = observation_variance(obs, np.nan_to_num(merged_i))
        return (obs.intensity - merged_i[obs.ih]) / np.sqrt(poisson + bkg)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (merged_i[obs.ih] - obs.intensity) / obs.error


#: median of chi-square(1): the median squared normalised residual of honest errors
_CHI2_1_MEDIAN = 0.454936
#: counting errors within this factor of the scatter are taken as they are (photon counting)
VARIANCE_SCALE_TOLERANCE = 1.2


def variance_scale(obs: Observations, merged_i, count, use) -> float:
    """How much more the observations of a voxel scatter than counting statistics say: the
    median of r^2 n / (n - 1) over voxels seen at least twice, over chi-square(1)'s median
    (robust to outliers). ~1 for photon-counting detectors; the gain for a CCD read in ADU."""
    poisson, bkg = observation_variance(obs, np.nan_to_num(merged_i))
    r2 = (obs.intensity - merged_i[obs.ih]) ** 2 / (poisson + bkg)
    n = count[obs.ih].astype(float)
    sel = use & (n >= 2) & np.isfinite(r2)
    if sel.sum() < 100:
        return 1.0
    return float(np.median(r2[sel] * n[sel] / (n[sel] - 1)) / _CHI2_1_MEDIAN) * obs.variance_scale


def random_half(ih: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic random halves: within each voxel, a seeded random order; the first
    half (the extra one of an odd count by a seeded coin) goes to group 0."""
    rng = np.random.default_rng(seed)
    jitter = rng.random(len(ih))
    m = int(ih.max()) + 1 if len(ih) else 0
    flip = rng.integers(0, 2, m).astype(bool)
    order = np.lexsort((jitter, ih))
    sorted_ih = ih[order]
    start = np.searchsorted(sorted_ih, np.arange(m))
    count = np.bincount(ih, minlength=m)
    rank = np.arange(len(ih)) - start[sorted_ih]
    first = 2 * rank < count[sorted_ih]
    first ^= flip[sorted_ih] & (count[sorted_ih] % 2 == 1) & (2 * rank == count[sorted_ih] - 1)
    group0 = np.empty(len(ih), bool)
    group0[order] = first
    return group0


def friedel_minus(op: np.ndarray, operators: np.ndarray) -> np.ndarray:
    """Observations mapped by an improper operator (the Friedel mate's side)."""
    improper = np.array([np.linalg.det(o) < 0 for o in operators])
    return improper[op]


@dataclass
class MergeSettings:
    outlier: float | None = None
    split: str | None = None
    seed: int = 0
    mdx2_compat: bool = False


def merge(obs: Observations, settings: MergeSettings, operators=None, log=print):
    """The merged table (mdx2's columns intensity, intensity_error, count, group_*; plus s,
    the mean |UB h| of the voxel's observations) and a summary."""
    physical = not settings.mdx2_compat
    if physical and obs.model is None:
        log(
            "the corrected tables lack seconds/correction/background columns (mdx2's?): "
            "merging with each observation's own errors, as mdx2"
        )
        physical = False
    merge_fn = merge_expected if physical else merge_mdx2
    use = np.ones(len(obs.ih), bool)
    intensity, sigma, count, use = merge_fn(obs, use)
    summary = {"observations": int(len(obs.ih)), "used": int(use.sum()), "outliers": 0}
    if physical:
        scale = variance_scale(obs, intensity, count, use)
        summary["variance_scale"] = scale
        if scale > VARIANCE_SCALE_TOLERANCE:
            log(
                f"observations scatter {scale:.3g}x more (in variance) than counting statistics "
                "(an integrating detector in ADU?): errors scaled by "
                f"{np.sqrt(scale):.3g}"
            )
            obs = dataclasses.replace(obs, variance_scale=scale)  # the caller's stays as given
            intensity, sigma, count, use = merge_fn(obs, use)
    if settings.outlier is not None:
        resid = residuals(obs, intensity, physical)
        with np.errstate(invalid="ignore"):
            bad = (np.abs(resid) if physical else resid) > settings.outlier
        bad &= use
        summary["outliers"] = int(bad.sum())
        log(f"rejected {int(bad.sum())} outliers (> {settings.outlier} sigma)")
        intensity, sigma, count, use = merge_fn(obs, use & ~bad)
        summary["used"] = int(use.sum())
    cols = hkl_from_voxels(obs.voxels, obs.ndiv)
    cols = {k: v.astype(np.float64) for k, v in cols.items()}
    cols.update(
        intensity=intensity.astype(np.float32),
        intensity_error=sigma.astype(np.float32),
        count=count.astype(np.int32),
    )
    m = len(obs.voxels)
    with np.errstate(invalid="ignore", divide="ignore"):
        cols["s"] = (
            np.bincount(obs.ih, weights=obs.s, minlength=m) / np.bincount(obs.ih, minlength=m)
        ).astype(np.float32)
    if settings.split:
        if settings.split == "randomHalf":
            g0 = random_half(obs.ih, settings.seed)
        elif settings.split == "Friedel":
            if operators is None:
                raise InputError("--split Friedel needs --geometry (the Laue operators)")
            g0 = ~friedel_minus(obs.op, operators)
        else:
            raise InputError(f"--split {settings.split}: choose from {', '.join(SPLITS)}")
        for j, g in enumerate((g0, ~g0)):
            gi, gs, gc, _ = merge_fn(obs, use & g)
            cols[f"group_{j}_intensity"] = gi.astype(np.float32)
            cols[f"group_{j}_intensity_error"] = gs.astype(np.float32)
            cols[f"group_{j}_count"] = gc.astype(np.int32)
    summary["voxels"] = int(np.count_nonzero(count))
    summary["weights"] = "expected counts" if physical else "observed counts (mdx2)"
    attrs = {f"diffuseflow_{k}": summary[k] for k in ("variance_scale", "outliers", "used")
             if k in summary}  # fmt: skip
    return HKLTable(cols, obs.ndiv, attrs), summary
