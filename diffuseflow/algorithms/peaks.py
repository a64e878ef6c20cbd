"""find_peaks: hot pixels -> fractional Miller offsets -> 3-D anisotropic Gaussian peak model.

The fit is mdx2's (``mdx2-compat.md`` §3.3): r0 = mean offset, sigma = V.diag(s/sqrt(N)) from
the SVD of the centred cloud (so sigma.sigma^T is the population covariance), outliers where
the squared Mahalanobis distance exceeds sigma_cutoff^2 under the first fit, then one refit on
the inliers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffuseflow.errors import InputError
from diffuseflow.geometry.kernels import interpolate_grid


@dataclass
class PeakModel:
    r0: np.ndarray  #: (3,) mean fractional offset
    sigma: np.ndarray  #: (3, 3), sigma @ sigma.T = covariance

    @property
    def cov(self) -> np.ndarray:
        return self.sigma @ self.sigma.T

    @property
    def precision(self) -> np.ndarray:
        return np.linalg.inv(self.cov)

    def mahalanobis2(self, offsets: np.ndarray) -> np.ndarray:
        """|sigma^-1 (r - r0)|^2 for offsets (N, 3)."""
        z = np.linalg.solve(self.sigma, (np.asarray(offsets) - self.r0).T)
        return np.sum(z * z, axis=0)

    def axes(self):
        """(semi-axis lengths, principal axes as rows), largest first (left singular vectors)."""
        u, s, _ = np.linalg.svd(self.sigma)
        return s, u.T


def hot_pixels(slab: np.ndarray, start: int, threshold: float):
    """(frame, iy, ix) of pixels with value > threshold in a slab; -1 pixels never qualify."""
    f, y, x = np.nonzero(slab > threshold)
    if threshold < -1:  # keep invalid pixels out whatever the threshold
        keep = slab[f, y, x] != -1
        f, y, x = f[keep], y[keep], x[keep]
    return f + start, y, x


def fractional_offsets(hkl: np.ndarray) -> np.ndarray:
    """hkl - round(hkl), numpy's round-half-to-even (as mdx2)."""
    return hkl - np.rint(hkl)


def fit_moments(offsets: np.ndarray) -> PeakModel:
    n = len(offsets)
    if n < 4:
        raise InputError(f"only {n} peak pixels: too few to fit a 3-D Gaussian")
    r0 = offsets.mean(axis=0)
    _, s, vt = np.linalg.svd(offsets - r0, full_matrices=False)
    if s[-1] <= 0:
        raise InputError("peak pixels are degenerate (all offsets on a plane): cannot fit")
    return PeakModel(r0, vt.T * (s / np.sqrt(n)))


def fit_peak_model(offsets: np.ndarray, sigma_cutoff: float):
    """mdx2's fit: moments, one outlier pass (d2 > cutoff^2), refit on the inliers.

    Returns (model, outlier boolean mask over the input points).
    """
    if not sigma_cutoff > 0:
        raise InputError(f"sigma_cutoff must be > 0, is {sigma_cutoff}")
    first = fit_moments(offsets)
    outliers = first.mahalanobis2(offsets) > sigma_cutoff**2
    model = fit_moments(offsets[~outliers])
    return model, outliers


def points_hkl(geomfile, mdx2_compat: bool, phi, iy, ix) -> np.ndarray:
    """hkl of points (phi, iy, ix): exact geometry, or mdx2's grid interpolation in compat mode."""
    if mdx2_compat:
        return interpolate_grid(geomfile.grid_hkl(), geomfile.grid_axes, phi, iy, ix)
    out = np.empty((len(phi), 3))
    geom = geomfile.sweep_geometry(False)
    step = 1_000_000  # bound temporary memory for very many peak pixels
    for s in range(0, len(phi), step):
        sl = slice(s, s + step)
        out[sl] = geom.hkl(phi[sl], iy[sl], ix[sl])
    return out


def suggest_threshold(series, max_slabs: int = 3, pool=None) -> dict:
    """Background level from a few slabs spread over the sweep, and a count threshold of
    10 x that level (the mdx2 tutorial's rule of thumb), at least 10 counts."""
    slabs = series.slabs()
    picks = np.unique(np.linspace(0, len(slabs) - 1, min(len(slabs), max_slabs)).round())
    values = []
    for k in picks.astype(int):
        slab = series.read(*slabs[k], pool)
        values.append(slab[slab >= 0][::7])  # a subsample keeps the statistics cheap
    v = np.concatenate(values)
    if v.size == 0:
        raise InputError(f"{series.path}: every pixel of the sampled frames is invalid (-1)")
    median = float(np.median(v))
    return {
        "median": median,
        "p90": float(np.percentile(v, 90)),
        "p99": float(np.percentile(v, 99)),
        "threshold": float(max(10.0, round(10 * median))),
    }


def find_peaks(geomfile, series, count_threshold, sigma_cutoff, mdx2_compat, pool=None, log=print):
    """Search every slab for hot pixels, index them and fit the peak model.

    Returns (model, outliers, (phi, iy, ix) of every hot pixel, offsets).
    """
    if count_threshold < 0:
        raise InputError(f"count_threshold must be >= 0, is {count_threshold}")
    if not sigma_cutoff > 0:
        raise InputError(f"sigma_cutoff must be > 0, is {sigma_cutoff}")
    frames, ys, xs = [], [], []
    n_valid = 0
    for start, stop in series.slabs():
        slab = series.read(start, stop, pool)
        n_valid += int(np.count_nonzero(slab != -1))
        f, y, x = hot_pixels(slab, start, count_threshold)
        log(f"frames {start} to {stop - 1}: {len(f)} peak pixels")
        frames.append(f)
        ys.append(y)
        xs.append(x)
    if n_valid == 0:
        raise InputError(f"{series.path}: every pixel is invalid (-1); nothing to search")
    f, y, x = (np.concatenate(a) for a in (frames, ys, xs))
    if len(f) == 0:
        raise InputError(
            f"{series.path}: no pixel above count_threshold {count_threshold:g}; lower it "
            "(see the suggested threshold above)"
        )
    log(f"Found {len(f)} peak pixels ({len(f) / n_valid:.3g} of valid pixels)")
    phi = series.phi[f]
    iy, ix = y.astype(float), x.astype(float)
    offsets = fractional_offsets(points_hkl(geomfile, mdx2_compat, phi, iy, ix))
    model, outliers = fit_peak_model(offsets, sigma_cutoff)
    log(f"Rejected {int(outliers.sum())} outliers ({outliers.mean():.2%})")
    s, axes = model.axes()
    log("Peak model r0: " + ", ".join(f"{v:.6f}" for v in model.r0))
    log("Error ellipsoid semi-axis lengths: " + ", ".join(f"{v:.6f}" for v in s))
    for k, a in enumerate(axes, 1):
        log(f"  principal axis {k}: ({', '.join(f'{v:.6f}' for v in a)})")
    return model, outliers, (phi, iy, ix), offsets
