"""Numbers behind the QC report: what each figure and the summary table show, read from the
.nxs files a run wrote. No plotting here (see ``diffuseflow.figures``), so every number a
figure draws can be tested on its own.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from diffuseflow.algorithms import maps
from diffuseflow.algorithms import merge as merging
from diffuseflow.algorithms.binning import read_binned
from diffuseflow.algorithms.importing import GeometryFile
from diffuseflow.algorithms.peaks import PeakModel
from diffuseflow.errors import InputError
from diffuseflow.geometry.model import SweepGeometry
from diffuseflow.io import nexus
from diffuseflow.io.expt import experiment_from_text

#: the pipeline's steps in run order, as (benchmark directory, label); a step split over
#: slab jobs has one benchmark file per job, summed
STEPS = (
    ("import_slab", "import"),
    ("import_data", "import"),
    ("import_background", "import"),
    ("find_peaks_slab", "find_peaks"),
    ("find_peaks", "find_peaks"),
    ("mask_slab", "mask_peaks"),
    ("mask_peaks", "mask_peaks"),
    ("bin_background", "bin_background"),
)


# -- peaks ----------------------------------------------------------------------------------


@dataclass
class PeakSearch:
    """What find_peaks saw and fitted (peaks.nxs)."""

    model: PeakModel
    offsets: np.ndarray  #: (N, 3) fractional Miller offsets of the peak pixels
    outlier: np.ndarray  #: (N,) bool
    sigma_cutoff: float  #: outlier cutoff of the fit
    count_threshold: float
    suggested_threshold: float
    histogram: np.ndarray  #: pixel values 0..len-1 (last bin: that value or more), sampled
    histogram_stride: int  #: every stride-th pixel along x was histogrammed
    n_valid: int
    n_outliers: int

    @property
    def d2(self) -> np.ndarray:
        """Squared Mahalanobis distance of every peak pixel under the final model."""
        return self.model.mahalanobis2(self.offsets)


def read_peak_search(path) -> PeakSearch:
    with nexus.open_input(path, "peaks.nxs", ["peak_model", "peaks", "outliers"]) as f:
        if "entry/diffuseflow_search/offsets" not in f:
            raise InputError(
                f"{path}: has no diffuseflow_search record (written by mdx2 or an older "
                "diffuseflow); rerun find_peaks to make the QC figures"
            )
        g = f["entry/diffuseflow_search"]
        params = nexus.provenance(path)["parameters"]
        return PeakSearch(
            model=PeakModel(f["entry/peak_model/r0"][()], f["entry/peak_model/sigma"][()]),
            offsets=g["offsets"][()],
            outlier=g["outlier"][()].astype(bool),
            sigma_cutoff=float(params.get("sigma_cutoff", 3.0)),
            count_threshold=float(g["count_threshold"][()]),
            suggested_threshold=float(g["suggested_count_threshold"][()]),
            histogram=g["histogram"][()],
            histogram_stride=int(g.attrs.get("histogram_stride", 1)),
            n_valid=int(g["n_valid"][()]),
            n_outliers=len(f["entry/outliers/observed_phi"]),
        )


def projected_ellipse(model: PeakModel, cutoff: float, i: int, j: int, n: int = 361):
    """Outline (x, y) of the ellipsoid |sigma^-1 (r - r0)| = cutoff projected on the plane of
    offset components i, j: its shadow is the ellipse of the 2x2 marginal covariance."""
    cov = model.cov[np.ix_([i, j], [i, j])]
    w, v = np.linalg.eigh(cov)
    t = np.linspace(0.0, 2.0 * np.pi, n)
    circle = np.stack([np.cos(t), np.sin(t)])
    xy = v @ (cutoff * np.sqrt(w)[:, None] * circle)
    return xy[0] + model.r0[i], xy[1] + model.r0[j]


def chi2_3_pdf(x):
    """Density of the chi-square distribution with 3 degrees of freedom (the squared
    Mahalanobis distance of a 3-D Gaussian)."""
    x = np.asarray(x, float)
    return np.where(x > 0, np.sqrt(np.clip(x, 0, None) / (2 * np.pi)) * np.exp(-x / 2), 0.0)


def chi2_3_sf(x: float) -> float:
    """P(chi2_3 > x)."""
    r = math.sqrt(x)
    return math.erfc(r / math.sqrt(2)) + math.sqrt(2 / math.pi) * r * math.exp(-x / 2)


def log_binned_histogram(hist: np.ndarray, per_decade: int = 20):
    """Pixel-value histogram (one bin per integer count) regrouped into log-spaced bins for
    display. Returns (edges, pixels per unit count in each bin) for counts >= 1."""
    top = len(hist)
    edges = np.unique(np.round(np.logspace(0, math.log10(top), per_decade * 5 + 1)).astype(int))
    sums = np.add.reduceat(hist, edges[:-1])[: len(edges) - 1]
    return edges, sums / np.diff(edges)


# -- frames and mask ------------------------------------------------------------------------


def sample_frames(n: int) -> list[int]:
    """Start, middle and end of a sweep (fewer if it is shorter)."""
    return sorted({0, n // 2, n - 1})


def display_range(image: np.ndarray, low: float = 1.0, high: float = 99.9):
    """A log colour scale a crystallographer would pick: clip to the low/high percentiles of
    the valid pixels (>= 0), never below 1 count (log)."""
    valid = image[image >= 0]
    if valid.size == 0:
        return 1.0, 10.0
    lo, hi = np.percentile(valid, [low, high])
    lo = max(float(lo), 1.0)
    return lo, max(float(hi), lo * 10)


def brightest_valid(image: np.ndarray):
    """(iy, ix) of the brightest valid pixel (where to zoom in)."""
    return np.unravel_index(int(np.argmax(np.where(image >= 0, image, -1))), image.shape)


def crop_around(shape, centre, size: int):
    """Slices of a size x size window around centre, kept inside the image."""
    out = []
    for n, c in zip(shape, centre, strict=True):
        s = min(size, n)
        lo = int(np.clip(c - s // 2, 0, n - s))
        out.append(slice(lo, lo + s))
    return tuple(out)


# -- background -----------------------------------------------------------------------------


def read_experiment(path):
    """The experiment recorded in a diffuseflow data.nxs or geometry.nxs (None if absent)."""
    with h5py.File(path, "r") as f:
        text = f.get("entry/diffuseflow_experiment")
        if text is None:
            return None
        text = text[()]
        return experiment_from_text(text.decode() if isinstance(text, bytes) else text, path)


def resolution_of_bins(expt, iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
    """|s| = 1/d (1/Angstrom) at the bin centres (iy, ix), shape (len(iy), len(ix))."""
    s = SweepGeometry(expt).scattering_vector(iy[:, None], ix[None, :])
    return np.linalg.norm(s, axis=-1)


def radial_profile(rate: np.ndarray, s: np.ndarray, n_shells: int = 25):
    """Mean rate in shells of |s| for each phi bin. Returns (shell centres, (phi bins,
    shells) mean rate, NaN where a shell has no bin with data)."""
    edges = np.linspace(np.nanmin(s), np.nanmax(s) * (1 + 1e-12), n_shells + 1)
    shell = np.clip(np.digitize(s.ravel(), edges) - 1, 0, n_shells - 1)
    out = np.full((rate.shape[0], n_shells), np.nan)
    for k, image in enumerate(rate):
        v = image.ravel()
        ok = np.isfinite(v)
        total = np.bincount(shell[ok], v[ok], n_shells)
        count = np.bincount(shell[ok], None, n_shells)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[k] = np.where(count > 0, total / count, np.nan)
    return 0.5 * (edges[:-1] + edges[1:]), out


# -- summary --------------------------------------------------------------------------------


def step_seconds(benchmarks: Path | None, name: str) -> dict[str, float]:
    """Wall-clock seconds per step for one sweep from Snakemake's benchmark files
    (``benchmarks/<rule>/<name>.tsv``; slab jobs ``<name>.slab<k>[.<stem>].tsv`` are added:
    the step's time is the sum over its jobs, i.e. CPU-side cost, not the wall-clock span)."""
    out: dict[str, float] = {}
    if benchmarks is None or not Path(benchmarks).is_dir():
        return out
    for rule, label in STEPS:
        d = Path(benchmarks) / rule
        files = [d / f"{name}.tsv", *sorted(d.glob(f"{name}.slab*.tsv"))]
        total = None
        for p in files:
            if p.exists():
                with open(p, newline="") as fh:
                    rows = list(csv.DictReader(fh, delimiter="\t"))
                if rows:
                    total = (total or 0.0) + float(rows[-1]["s"])
        if total is not None:
            out[label] = out.get(label, 0.0) + total
    return out


def crystal_summary(
    sweep_dir: Path, background_binned=None, benchmarks=None, search=None, masked=None
) -> list[tuple]:
    """(quantity, value, unit) rows for a crystal sweep directory (geometry, data, peaks,
    mask .nxs), every number read from the files (or a benchmark file). ``search`` (its
    peaks.nxs) and ``masked`` (masked pixels per frame) are read here unless already read."""
    sweep_dir = Path(sweep_dir)
    geom = GeometryFile(sweep_dir / "geometry.nxs")
    with nexus.ImageSeries(sweep_dir / "data.nxs") as series:
        n, ny, nx = series.shape
        phi = series.phi
    if search is None:
        search = read_peak_search(sweep_dir / "peaks.nxs")
    if masked is None:
        masked = nexus.read_mask_counts(sweep_dir / "mask.nxs")
    n_peaks = len(search.offsets)  # one offset per peak pixel
    semi_axes, _ = search.model.axes()
    mask_params = nexus.provenance(sweep_dir / "mask.nxs")["parameters"]
    rows = [
        ("frames", n, ""),
        ("phi range", f"{phi[0]:g} to {phi[-1]:g}", "deg (frame centres)"),
        ("detector size", f"{ny} x {nx}", "rows x columns"),
        ("space group", geom.space_group_symbol, ""),
        ("count_threshold", search.count_threshold, "counts"),
        ("suggested count_threshold", search.suggested_threshold, "counts"),
        ("peak pixels", n_peaks, ""),
        ("outliers", search.n_outliers, f"beyond {search.sigma_cutoff:g} sigma"),
        *((f"r0 {c}", float(v), "") for c, v in zip("hkl", search.model.r0, strict=True)),
        *(
            (f"semi-axis {k}", float(v), "1 sigma, fractional hkl")
            for k, v in enumerate(semi_axes, 1)
        ),
        ("mask sigma_cutoff", mask_params.get("sigma_cutoff"), ""),
        ("masked", 100.0 * masked.sum() / (n * ny * nx), "% of pixels"),
    ]
    if background_binned is not None:
        rows.append(
            (
                "mean background rate",
                float(np.nanmean(read_binned(background_binned).rate)),
                "counts/s/pixel",
            )
        )
    rows += [
        (f"time {k}", round(v, 2), "s") for k, v in step_seconds(benchmarks, sweep_dir.name).items()
    ]
    return rows


def background_summary(sweep_dir: Path, benchmarks=None) -> list[tuple]:
    sweep_dir = Path(sweep_dir)
    with nexus.ImageSeries(sweep_dir / "bkg_data.nxs") as series:
        n, ny, nx = series.shape
        phi = series.phi
    binned = read_binned(sweep_dir / "bkg_data_binned.nxs")
    rows = [
        ("frames", n, ""),
        ("phi range", f"{phi[0]:g} to {phi[-1]:g}", "deg (frame centres)"),
        ("detector size", f"{ny} x {nx}", "rows x columns"),
        ("bins", " x ".join(map(str, binned.rate.shape)), "phi x rows x columns"),
        ("mean background rate", float(np.nanmean(binned.rate)), "counts/s/pixel"),
        ("empty bins", int(np.isnan(binned.rate).sum()), ""),
    ]
    rows += [
        (f"time {k}", round(v, 2), "s") for k, v in step_seconds(benchmarks, sweep_dir.name).items()
    ]
    return rows


def _plain(v):
    """Full-precision text of a number (numpy scalars as plain Python numbers)."""
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return v


def write_summary_tsv(rows, path):
    """Machine-readable summary: quantity, value (full precision), unit."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(["quantity", "value", "unit"])
        for q, v, u in rows:
            w.writerow([q, _plain(v), u])


def read_summary_tsv(path) -> dict[str, str]:
    with open(path, newline="") as fh:
        return {r["quantity"]: r["value"] for r in csv.DictReader(fh, delimiter="\t")}


def summary_html(title: str, rows) -> str:
    """The summary as a small self-contained HTML page (shown inline by Snakemake's report)."""
    import html

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.6g}"
        return html.escape(str(v))

    body = "\n".join(
        f"<tr><th>{html.escape(q)}</th><td>{fmt(v)}</td><td>{html.escape(u)}</td></tr>"
        for q, v, u in rows
    )
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif}table{border-collapse:collapse}"
        "th,td{padding:2px 10px;border-bottom:1px solid #ddd;text-align:left}"
        "td:nth-child(2){text-align:right;font-family:monospace}</style></head><body>"
        f"<h3>{html.escape(title)}</h3><table>\n{body}\n</table></body></html>\n"
    )


# -- scaling ------------------------------------------------------------------------------------


@dataclass
class ScalingQC:
    """What scaling changed: half-data correlations against resolution before and after the
    factors are divided out, and each sweep's agreement with the merged map."""

    s_mid: np.ndarray  #: shell centres (1/Angstrom), equal numbers of merged voxels
    cc_half_before: np.ndarray
    cc_half_after: np.ndarray
    friedel_before: np.ndarray  #: CC of the two Friedel halves (NaN without operators)
    friedel_after: np.ndarray
    sweep_cc: np.ndarray  #: (sweeps, shells): CC of each sweep's own merge with the map
    overall: dict  #: the same over all voxels


def _shell_cc(a, b, idx, n):
    return np.array([maps.pearson(a[idx == j], b[idx == j]) for j in range(n)])


def scaling_qc(obs, scaled, operators=None, n_shells: int = 12, seed: int = 0) -> ScalingQC:
    """Half-data CCs of the observations ``obs`` before and ``scaled`` after scaling
    (merge.Observations; the same rows), by resolution shell, and each sweep's CC with the
    merge of all."""

    def halves(o, split):
        table, _ = merging.merge(o, merging.MergeSettings(split=split, seed=seed), operators,
                                 log=lambda *a: None)  # fmt: skip
        return table

    before = halves(obs, "randomHalf")
    after = halves(scaled, "randomHalf")
    s = before["s"].astype(float)
    ok = np.isfinite(s)
    edges, idx = maps.shells(s, n_shells)
    idx = np.where(ok, idx, -1)

    def pair(t):
        return t["group_0_intensity"].astype(float), t["group_1_intensity"].astype(float)

    out = {"cc_half_before": _shell_cc(*pair(before), idx, n_shells),
           "cc_half_after": _shell_cc(*pair(after), idx, n_shells)}  # fmt: skip
    overall = {"CC1/2 before scaling": maps.pearson(*pair(before)),
               "CC1/2 after scaling": maps.pearson(*pair(after))}  # fmt: skip
    if operators is not None:
        fb, fa = halves(obs, "Friedel"), halves(scaled, "Friedel")
        out["friedel_before"] = _shell_cc(*pair(fb), idx, n_shells)
        out["friedel_after"] = _shell_cc(*pair(fa), idx, n_shells)
        overall["Friedel-pair CC before scaling"] = maps.pearson(*pair(fb))
        overall["Friedel-pair CC after scaling"] = maps.pearson(*pair(fa))
    else:
        out["friedel_before"] = out["friedel_after"] = np.full(n_shells, np.nan)
    merged = after["intensity"].astype(float)
    nb = int(obs.batch.max()) + 1 if len(obs.batch) else 0
    sweep_cc = np.full((nb, n_shells), np.nan)
    for j in range(nb):
        alone = merging.merge_expected if scaled.model is not None else merging.merge_mdx2
        own = alone(scaled, scaled.batch == j)[0]
        sweep_cc[j] = _shell_cc(own, merged, idx, n_shells)
        overall[f"sweep {j} CC with the merged map"] = maps.pearson(own, merged)
    return ScalingQC(0.5 * (edges[1:] + edges[:-1]), out["cc_half_before"],
                     out["cc_half_after"], out["friedel_before"], out["friedel_after"],
                     sweep_cc, overall)  # fmt: skip
