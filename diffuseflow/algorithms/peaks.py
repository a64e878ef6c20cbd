"""find_peaks: hot pixels -> fractional Miller offsets -> 3-D anisotropic Gaussian peak model.

The fit is mdx2's (``mdx2-compat.md`` §3.3): r0 = mean offset, sigma = V.diag(s/sqrt(N)) from
the SVD of the centred cloud (so sigma.sigma^T is the population covariance), outliers where
the squared Mahalanobis distance exceeds sigma_cutoff^2 under the first fit, then one refit on
the inliers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from diffuseflow.errors import InputError
from diffuseflow.geometry.kernels import interpolate_grid
from diffuseflow.io import nexus, strong


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


#: counts at or above this share the histogram's last bin (only low percentiles are needed)
HIST_BINS = 1 << 16


#: histogram every HIST_STRIDE-th pixel along x: ~10^7 samples per sweep are plenty for a median
HIST_STRIDE = 8


@njit(cache=True, nogil=True)
def _scan(slab, threshold, hist, fs, ys, xs):
    """One pass over a slab: count valid pixels, record pixels > threshold into (fs, ys, xs)
    while they fit, and histogram every HIST_STRIDE-th valid value. Returns (valid, hot)."""
    n_valid = 0
    n_hot = 0
    cap = fs.shape[0]
    top = hist.shape[0] - 1
    for f in range(slab.shape[0]):
        for y in range(slab.shape[1]):
            row = slab[f, y]
            for x in range(row.shape[0]):
                v = row[x]
                if v < 0:
                    continue
                n_valid += 1
                if v > threshold:
                    if n_hot < cap:
                        fs[n_hot] = f
                        ys[n_hot] = y
                        xs[n_hot] = x
                    n_hot += 1
            for x in range(0, row.shape[0], HIST_STRIDE):
                v = row[x]
                if v >= 0:
                    hist[min(v, top)] += 1
    return n_valid, n_hot


@njit(cache=True, nogil=True)
def _hot(slab, threshold, n_hot):
    fs = np.empty(n_hot, np.int64)
    ys = np.empty(n_hot, np.int64)
    xs = np.empty(n_hot, np.int64)
    k = 0
    for f in range(slab.shape[0]):
        for y in range(slab.shape[1]):
            for x in range(slab.shape[2]):
                if slab[f, y, x] > threshold:
                    fs[k] = f
                    ys[k] = y
                    xs[k] = x
                    k += 1
    return fs, ys, xs


def scan_slab(slab: np.ndarray, start: int, threshold: float, hist: np.ndarray):
    """Hot pixels (frame, iy, ix) of a slab in C order (value > threshold; -1 never counts),
    the number of valid pixels, and the value histogram accumulated into ``hist``."""
    t = float(max(threshold, -1.0))
    cap = max(1024, slab.size // 256)  # room for 0.4 % hot pixels; recount exactly beyond
    buf = [np.empty(cap, np.int64) for _ in range(3)]
    n_valid, n_hot = _scan(slab, t, hist, *buf)
    if n_hot <= cap:
        f, y, x = (b[:n_hot] for b in buf)
    else:
        f, y, x = _hot(slab, t, n_hot)
    return (f + start, y, x), n_valid


#: the import lists at most about this fraction of a frame's valid pixels as strong pixels;
#: where more lie above the requested floor (a CCD's counts in ADU), that frame's floor rises
STRONG_FRACTION = 0.002


@njit(cache=True, nogil=True)
def _strong_floor(hist, n_sampled, floor, fraction):
    """The lowest value >= floor above which at most ``fraction`` of the sampled pixels lie."""
    allowed = fraction * n_sampled
    above = 0
    v = hist.shape[0] - 1
    while v >= 0:
        if above + hist[v] > allowed:
            break
        above += hist[v]
        v -= 1
    return max(floor, float(v))


@njit(cache=True, nogil=True)
def _scan_frame(frame, floor, hist, ys, xs, cs):
    """One pass over a frame for the import: per row (while it is in L1) the sampled
    histogram (as ``_scan``), then the valid pixels, those above ``floor`` into (ys, xs, cs)
    while they fit. Returns (n_sampled, n_valid, n_above)."""
    top = hist.shape[0] - 1
    cap = ys.shape[0]
    n_sampled = 0
    n_valid = 0
    n = 0
    for y in range(frame.shape[0]):
        row = frame[y]
        for x in range(0, row.shape[0], HIST_STRIDE):
            v = row[x]
            if v >= 0:
                hist[min(v, top)] += 1
                n_sampled += 1
        # the valid count and the row's maximum vectorise; the rare rows with a pixel above
        # the floor are then walked pixel by pixel
        top_value = -1
        for x in range(row.shape[0]):
            v = row[x]
            n_valid += v >= 0
            top_value = max(top_value, v)
        if top_value > floor:
            for x in range(row.shape[0]):
                v = row[x]
                if v > floor:
                    if n < cap:
                        ys[n] = y
                        xs[n] = x
                        cs[n] = v
                    n += 1
    return n_sampled, n_valid, n


@njit(cache=True, nogil=True)
def _strong_all(frame, t):
    n = 0
    for y in range(frame.shape[0]):
        for x in range(frame.shape[1]):
            n += frame[y, x] > t
    ys = np.empty(n, np.int32)
    xs = np.empty(n, np.int32)
    cs = np.empty(n, np.int32)
    k = 0
    for y in range(frame.shape[0]):
        for x in range(frame.shape[1]):
            if frame[y, x] > t:
                ys[k] = y
                xs[k] = x
                cs[k] = frame[y, x]
                k += 1
    return ys, xs, cs


def scan_frame_strong(frame: np.ndarray, floor: float, fraction: float = STRONG_FRACTION):
    """The import's pass over one int32 frame (-1 = invalid): its sampled value histogram,
    its floor (``floor``, raised where more than ``fraction`` of the sampled pixels lie above
    it) and every valid pixel above that floor (iy, ix, counts in C order). Returns
    (floor, n_valid, (iy, ix, counts), histogram). One pass where the floor stands (photon
    counting); where it rises (a CCD's counts in ADU) the pixels above the new floor are
    picked from those found, or found in two more passes if they did not fit."""
    hist = np.zeros(HIST_BINS, np.int64)
    cap = max(1024, int(frame.size * fraction * 2))
    bufs = [np.empty(cap, np.int32) for _ in range(3)]
    n_sampled, n_valid, n = _scan_frame(frame, float(floor), hist, *bufs)
    t = _strong_floor(hist, n_sampled, float(floor), fraction)
    if n > cap:
        return t, n_valid, _strong_all(frame, t), hist
    cols = tuple(b[:n].copy() for b in bufs)  # not views: each would keep its buffer alive
    if t > floor:
        keep = cols[2] > t
        cols = tuple(c[keep] for c in cols)
    return t, n_valid, cols, hist


def histogram_stats(hist: np.ndarray) -> dict:
    """Median and percentiles of the valid counts from their histogram, and the threshold
    suggestion: 10 x the median (the mdx2 tutorial's rule of thumb), at least 10 counts."""
    total = hist.sum()
    if total == 0:
        raise InputError("no valid pixels to estimate the background from")
    cdf = np.cumsum(hist)

    def pct(p):
        return float(np.searchsorted(cdf, p / 100 * total, side="left"))

    median = pct(50)
    return {
        "median": median,
        "p90": pct(90),
        "p99": pct(99),
        "threshold": float(max(10.0, round(10 * median))),
    }


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
    if (~outliers).sum() < 4:
        raise InputError(
            f"sigma_cutoff {sigma_cutoff:g} rejects {int(outliers.sum())} of {len(offsets)} peak "
            "pixels as outliers, leaving too few to fit; raise sigma_cutoff (3 is usual)"
        )
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


def _sample_slabs(n_slabs: int, max_slabs: int) -> np.ndarray:
    return np.unique(np.linspace(0, n_slabs - 1, min(n_slabs, max_slabs)).round()).astype(int)


def suggest_threshold(series, max_slabs: int = 3, pool=None) -> dict:
    """Background statistics from a few slabs spread over the sweep (for ``auto``): from the
    import's histograms of those slabs when data.nxs has them, else by reading the slabs."""
    slabs = series.slabs()
    picks = _sample_slabs(len(slabs), max_slabs)
    hist = np.zeros(HIST_BINS, np.int64)
    f = series.file
    listed = (
        strong.has_strong_pixels(f)
        and [tuple(r) for r in f[strong.GROUP]["histogram_frames"][()]] == [tuple(b) for b in slabs]
        and strong.is_current(f, series.data)
    )
    if listed:
        hist = strong.read_histogram(f, picks)
    else:
        empty = np.empty(0, np.int64)
        for k in picks:
            _scan(series.read(*slabs[k], pool), np.inf, hist, empty, empty, empty)
    if hist.sum() == 0:
        raise InputError(f"{series.path}: every pixel of the sampled frames is invalid (-1)")
    return histogram_stats(hist)


@dataclass
class HotPixels:
    """Result of the search over a run of frames: peak pixels (global frame index, iy, ix in C
    order), the number of valid pixels searched and the histogram of their values."""

    frame: np.ndarray
    iy: np.ndarray
    ix: np.ndarray
    n_valid: int
    hist: np.ndarray
    threshold: float
    frames: tuple[int, int]

    @classmethod
    def concat(cls, parts: list[HotPixels]) -> HotPixels:
        """Join searches of consecutive frame runs (a sweep split into slab jobs)."""
        if not parts:
            raise InputError("no partial searches to gather")
        parts = sorted(parts, key=lambda p: p.frames[0])
        for a, b in zip(parts[:-1], parts[1:], strict=True):
            if a.frames[1] != b.frames[0]:
                raise InputError(
                    f"partial searches do not tile the sweep: frames {a.frames} then {b.frames}"
                )
            if a.threshold != b.threshold:
                raise InputError(
                    f"partial searches used different count_threshold ({a.threshold:g}, "
                    f"{b.threshold:g})"
                )
        return cls(
            np.concatenate([p.frame for p in parts]),
            np.concatenate([p.iy for p in parts]),
            np.concatenate([p.ix for p in parts]),
            sum(p.n_valid for p in parts),
            np.sum([p.hist for p in parts], axis=0),
            parts[0].threshold,
            (parts[0].frames[0], parts[-1].frames[1]),
        )


def search_hot_pixels(series, count_threshold, frame_range=None, pool=None, log=print):
    """Scan the frames [start, stop) of an image series (default: all) for peak pixels."""
    if count_threshold < 0:
        raise InputError(f"count_threshold must be >= 0, is {count_threshold}")
    frames, ys, xs = [], [], []
    n_valid = 0
    hist = np.zeros(HIST_BINS, np.int64)
    for (start, stop), slab in series.iter_slabs(pool, frame_range=frame_range):
        (f, y, x), k = scan_slab(slab, start, count_threshold, hist)
        n_valid += k
        log(f"frames {start} to {stop - 1}: {len(f)} peak pixels")
        frames.append(f)
        ys.append(y)
        xs.append(x)
    rng = frame_range or (0, series.shape[0])
    f, y, x = (np.concatenate(a) if a else np.empty(0, np.int64) for a in (frames, ys, xs))
    return HotPixels(f, y, x, n_valid, hist, float(count_threshold), tuple(rng))


def listed_hot_pixels(series, count_threshold, frame_range=None):
    """The search's result from the import's strong-pixel list, without decoding the stack:
    (HotPixels, None), equal to ``search_hot_pixels``; or (None, why) where the list cannot
    stand in for the search (none in the file, or count_threshold below its floor)."""
    f = series.file
    if not strong.has_strong_pixels(f):
        return None, f"{series.path} has no strong-pixel list (mdx2's, or an older import)"
    if not strong.is_current(f, series.data):
        return None, (
            f"{series.path}: its stack was rewritten after the import listed its strong pixels"
        )
    start, stop = frame_range or (0, series.shape[0])
    floors = f[strong.GROUP]["floor"][start:stop]
    if np.isnan(floors).any():
        return None, f"{series.path}: its strong-pixel list misses frames of {start}-{stop - 1}"
    floor = float(floors.max()) if len(floors) else 0.0
    if count_threshold < floor:
        return None, (
            f"count_threshold {count_threshold:g} is below the strong-pixel floor {floor:g} "
            "recorded at import"
        )
    if strong.histogram_rows(f, start, stop) is None:
        return None, f"frames {start}-{stop - 1} are not whole chunks of {series.path}"
    listed = strong.read_strong_pixels(f, start, stop, min_counts=count_threshold)
    hot = HotPixels(
        listed.frame,
        listed.iy,
        listed.ix,
        listed.n_valid,
        listed.histogram,
        float(count_threshold),
        (start, stop),
    )
    return hot, None


@dataclass
class PeakFit:
    """The gather step's result: the model, and per hot pixel its position, fractional Miller
    offset and outlier flag; plus the background statistics of the searched pixels."""

    model: PeakModel
    outliers: np.ndarray
    phi: np.ndarray
    iy: np.ndarray
    ix: np.ndarray
    offsets: np.ndarray
    stats: dict


def fit_hot_pixels(
    geomfile, hot: HotPixels, phi_axis, sigma_cutoff, mdx2_compat, source, log=print
) -> PeakFit:
    """Index the peak pixels and fit the peak model (the gather step)."""
    if not sigma_cutoff > 0:
        raise InputError(f"sigma_cutoff must be > 0, is {sigma_cutoff}")
    if hot.n_valid == 0:
        raise InputError(f"{source}: every pixel is invalid (-1); nothing to search")
    stats = histogram_stats(hot.hist)
    log(
        f"Background level: median {stats['median']:g}, p90 {stats['p90']:g}, "
        f"p99 {stats['p99']:g} counts; suggested count_threshold {stats['threshold']:g}"
    )
    if len(hot.frame) == 0:
        raise InputError(
            f"{source}: no pixel above count_threshold {hot.threshold:g}; lower it "
            f"(suggested: {stats['threshold']:g})"
        )
    log(f"Found {len(hot.frame)} peak pixels ({len(hot.frame) / hot.n_valid:.3g} of valid pixels)")
    phi = np.asarray(phi_axis)[hot.frame]
    iy, ix = hot.iy.astype(float), hot.ix.astype(float)
    offsets = fractional_offsets(points_hkl(geomfile, mdx2_compat, phi, iy, ix))
    model, outliers = fit_peak_model(offsets, sigma_cutoff)
    log(f"Rejected {int(outliers.sum())} outliers ({outliers.mean():.2%})")
    s, axes = model.axes()
    log("Peak model r0: " + ", ".join(f"{v:.6f}" for v in model.r0))
    log("Error ellipsoid semi-axis lengths: " + ", ".join(f"{v:.6f}" for v in s))
    for k, a in enumerate(axes, 1):
        log(f"  principal axis {k}: ({', '.join(f'{v:.6f}' for v in a)})")
    return PeakFit(model, outliers, phi, iy, ix, offsets, stats)


def write_search(entry, hot: HotPixels, fit: PeakFit | None = None):
    """What the search saw, beside mdx2's groups: per hot pixel its frame (and, after the fit,
    its fractional offset and outlier flag), the valid pixels searched, the value histogram
    (every HIST_STRIDE-th pixel), the threshold and the frame run. The gather step reads it
    from partial files; the QC report reads it from peaks.nxs."""
    g = entry.create_group("diffuseflow_search")
    g.create_dataset("frame", data=hot.frame)
    g.create_dataset("n_valid", data=np.int64(hot.n_valid))
    g.create_dataset("histogram", data=hot.hist, compression="gzip", shuffle=True)
    g.attrs["histogram_stride"] = HIST_STRIDE
    g.create_dataset("count_threshold", data=hot.threshold)
    g.create_dataset("frames", data=np.asarray(hot.frames, np.int64))
    if fit is not None:
        g.create_dataset("offsets", data=fit.offsets, compression="gzip", shuffle=True)
        g.create_dataset("outlier", data=fit.outliers, compression="gzip")
        g.create_dataset("suggested_count_threshold", data=float(fit.stats["threshold"]))
    return g


def write_hot_pixels(entry, hot, phi_axis):
    """A partial find_peaks result (one frame run): peak pixels in mdx2's Peaks layout plus
    what the gather step needs."""
    nexus.write_peaks(entry, "peaks", np.asarray(phi_axis)[hot.frame], hot.iy, hot.ix)
    write_search(entry, hot)


def read_hot_pixels(path):
    with nexus.open_input(path, "a partial find_peaks file", ["peaks", "diffuseflow_search"]) as f:
        g = f["entry/diffuseflow_search"]
        p = f["entry/peaks"]
        return HotPixels(
            g["frame"][()],
            p["observed_px_y"][()].astype(np.int64),
            p["observed_px_x"][()].astype(np.int64),
            int(g["n_valid"][()]),
            g["histogram"][()],
            float(g["count_threshold"][()]),
            tuple(int(v) for v in g["frames"][()]),
        )
