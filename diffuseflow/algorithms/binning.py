"""bin_image_series: block-average an image series into a count-rate map (counts/s/pixel).

As mdx2 (``mdx2-compat.md`` §3.5): each axis is cut into ceil(n/b) nearly equal sections
(numpy.array_split); a bin's value is the unweighted mean of its valid counts divided by the
mean exposure time of its frames; NaN where a bin has no valid pixel. Invalid: -1, counts
outside the inclusive valid_range, masked pixels.

Beyond mdx2, each bin also carries its summed counts, number of valid pixels and summed
exposure seconds, so its Poisson standard error is known: sqrt(counts) / seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from diffuseflow.errors import InputError
from diffuseflow.io.nexus import open_input, provenance, read_slab, sweep_of


def sections(n: int, b: int) -> np.ndarray:
    """Start indices of ceil(n/b) nearly equal sections (first n mod k get one extra)."""
    k = math.ceil(n / b)
    sizes = np.full(k, n // k)
    sizes[: n % k] += 1
    return np.concatenate([[0], np.cumsum(sizes)])


@dataclass
class Binned:
    signal: np.ndarray  #: counts/s, NaN for empty bins (mdx2's value)
    counts: np.ndarray  #: summed valid counts
    n_valid: np.ndarray  #: number of valid pixel-frames
    seconds: np.ndarray  #: summed exposure seconds of the valid pixel-frames
    phi: np.ndarray
    iy: np.ndarray
    ix: np.ndarray

    @property
    def rate_error(self) -> np.ndarray:
        """Poisson standard error of ``signal`` (counts/s)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(self.counts) / self.seconds


def check_bins(bins, shape, names=("frames", "rows", "columns")):
    if len(bins) != 3:
        raise InputError("bins need three sizes: frames, rows, columns")
    for b, n, name in zip(bins, shape, names, strict=True):
        if b <= 0:
            raise InputError(f"bin size in {name} must be > 0, is {b}")
        if b > n:
            raise InputError(f"bin size in {name} ({b}) is larger than the axis ({n} {name})")


def check_valid_range(valid_range):
    if valid_range is None:
        return None
    lo, hi = valid_range
    if not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
        raise InputError(f"valid_range must be finite with LO < HI, is [{lo}, {hi}]")
    return float(lo), float(hi)


@njit(cache=True, nogil=True)
def _accumulate(data, exposure, lo, hi, mask, use_mask, ybin, xbin, counts, n, secs):
    """One pass over a slab: sum valid counts, valid pixels and their seconds per (y, x) bin."""
    for f in range(data.shape[0]):
        t = exposure[f]
        for y in range(data.shape[1]):
            by = ybin[y]
            for x in range(data.shape[2]):
                v = data[f, y, x]
                if v == -1 or v < lo or v > hi:
                    continue
                if use_mask and mask[f, y, x]:
                    continue
                bx = xbin[x]
                counts[by, bx] += v
                n[by, bx] += 1
                secs[by, bx] += t


def bin_slab(data, exposure, valid_range, mask, ys, xs):
    """Sum a slab (frames, ny, nx) into (ny_bins, nx_bins) counts, n_valid and seconds."""
    ybin = np.repeat(np.arange(len(ys) - 1), np.diff(ys))
    xbin = np.repeat(np.arange(len(xs) - 1), np.diff(xs))
    shape = (len(ys) - 1, len(xs) - 1)
    counts = np.zeros(shape, np.int64)
    n = np.zeros(shape, np.int64)
    secs = np.zeros(shape)
    lo, hi = valid_range if valid_range is not None else (-np.inf, np.inf)
    use_mask = mask is not None
    m = mask if use_mask else np.zeros((1, 1, 1), np.bool_)
    _accumulate(
        data,
        np.asarray(exposure, float),
        float(lo),
        float(hi),
        m,
        use_mask,
        ybin,
        xbin,
        counts,
        n,
        secs,
    )
    return counts, n, secs


def section_means(axis, starts):
    return np.array([np.mean(axis[a:b]) for a, b in zip(starts[:-1], starts[1:], strict=True)])


def bin_series(series, bins, valid_range, mask_path=None, pool=None, log=print) -> Binned:
    """Bin a whole image series, one phi-section at a time (memory: one section)."""

    n, ny, nx = series.shape
    check_bins(bins, series.shape)
    ps, ys, xs = sections(n, bins[0]), sections(ny, bins[1]), sections(nx, bins[2])
    shape = (len(ps) - 1, len(ys) - 1, len(xs) - 1)
    counts = np.zeros(shape, np.int64)
    n_valid = np.zeros(shape, np.int64)
    seconds = np.zeros(shape)
    signal = np.full(shape, np.nan)
    mask_ds = None
    mask_file = None
    if mask_path:
        mask_file = open_input(mask_path, "a mask (mask.nxs)", ["mask"])
        mask_ds = mask_file["entry/mask/signal"]
        if mask_ds.shape != series.shape or mask_ds.dtype != bool:
            found = f"{mask_ds.dtype} {mask_ds.shape}"  # read before the file closes
            mask_file.close()
            raise InputError(
                f"{mask_path}: mask must be bool with the shape of {series.path}'s images "
                f"{series.shape}, is {found}"
            )
    try:
        for b, (p0, p1) in enumerate(zip(ps[:-1], ps[1:], strict=True)):
            log(f"binning frames {p0} to {p1 - 1}")
            data = series.read(int(p0), int(p1), pool)
            mask = None
            if mask_ds is not None:
                mask = read_slab(mask_ds, int(p0), int(p1), pool)
            expo = series.exposure_times[p0:p1]
            c, k, s = bin_slab(data, expo, valid_range, mask, ys, xs)
            counts[b], n_valid[b], seconds[b] = c, k, s
            with np.errstate(invalid="ignore", divide="ignore"):
                signal[b] = np.where(k > 0, c / k, np.nan) / np.mean(expo)
    finally:
        if mask_file is not None:
            mask_file.close()
    return Binned(
        signal,
        counts,
        n_valid,
        seconds,
        section_means(series.phi, ps),
        section_means(series.iy, ys),
        section_means(series.ix, xs),
    )


@dataclass
class BinnedBackground:
    """A binned background file (ours or mdx2's), as correct and the QC page read it."""

    rate: np.ndarray  #: (phi bins, iy bins, ix bins) counts/s per pixel, NaN = no data
    error: np.ndarray | None  #: standard error of rate (None: mdx2's file, no counts kept)
    phi: np.ndarray
    iy: np.ndarray
    ix: np.ndarray
    phi_range: tuple[float, float]  #: rotation range the background sweep covers (degrees)
    bins: list | None  #: the bin sizes it was made with (None: not recorded)
    path: str


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def read_binned(path, what: str = "a binned background") -> BinnedBackground:
    with open_input(path, what, ["binned_image_series"]) as f:
        g = f["entry/binned_image_series"]
        signal = _text(g.attrs.get("signal", "signal"))
        axes = [_text(a) for a in g.attrs.get("axes", ["phi", "iy", "ix"])]
        rate = g[signal][()].astype(float)
        phi, iy, ix = (g[a][()].astype(float) for a in axes)
        error = g["rate_error"][()].astype(float) if "rate_error" in g else None
    sweep = sweep_of(path)
    if sweep is not None and "phi" in sweep and "shape" in sweep:
        start, width = sweep["phi"]
        phi_range = (float(start), float(start + width * sweep["shape"][0]))
    else:  # mdx2's file: half a bin beyond the first and last bin centres
        half = (phi[1] - phi[0]) / 2 if len(phi) > 1 else 0.5
        phi_range = (float(phi[0] - half), float(phi[-1] + half))
    bins = provenance(path)["parameters"].get("bins")
    return BinnedBackground(rate, error, phi, iy, ix, phi_range, bins, str(path))
