"""QC figures (matplotlib, Agg backend: no display needed). Each function draws one figure
from numbers computed in ``diffuseflow.algorithms.qc`` and saves it as PNG."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from diffuseflow.algorithms import binning, qc  # noqa: E402

DPI = 110
#: masked pixels: translucent so the counts underneath stay visible
MASK_RGBA = (1.0, 0.15, 0.1, 0.35)
#: invalid pixels (-1: gaps, beamstop, untrusted regions), distinct from "zero counts"
INVALID_COLOUR = "#3b7dd8"
IMAGE_CMAP = "gray_r"  # dark spots on white, as in the DIALS image viewer and adxv
OFFSET_LABELS = ("dh", "dk", "dl")


def _save(fig, path):
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


@contextlib.contextmanager
def written_atomically(outdir: Path, prefix: str):
    """Yields (scratch folder inside ``outdir``, list of files moved in): figures are drawn
    into the scratch folder and moved into ``outdir`` only when the block succeeds, so a failed
    QC step leaves the previous page whole, not half replaced."""
    moved: list[Path] = []
    with tempfile.TemporaryDirectory(dir=outdir, prefix=prefix) as tmp:
        yield Path(tmp), moved
        for f in sorted(Path(tmp).iterdir()):
            os.replace(f, Path(outdir) / f.name)
            moved.append(Path(outdir) / f.name)


def offset_cloud(search: qc.PeakSearch, path, mask_cutoff: float | None = None):
    """Peak-pixel offsets in three projections, the fitted ellipse and the outliers."""
    fig, axs = plt.subplots(1, 3, figsize=(13, 4.4), constrained_layout=True)
    inl = ~search.outlier
    for ax, (i, j) in zip(axs, ((0, 1), (0, 2), (1, 2)), strict=True):
        h = ax.hist2d(
            search.offsets[inl, i],
            search.offsets[inl, j],
            bins=120,
            range=[[-0.5, 0.5], [-0.5, 0.5]],
            norm=LogNorm(),
            cmap="viridis",
            zorder=2,
        )
        # outliers are outliers in 3-D; drawn under the cloud so that, where a projection
        # overlaps the inliers, the inlier density stays readable
        ax.plot(
            search.offsets[search.outlier, i],
            search.offsets[search.outlier, j],
            ".",
            color="tab:red",
            ms=2,
            alpha=0.5,
            zorder=1,
            label=f"outliers ({search.n_outliers})",
        )
        x, y = qc.projected_ellipse(search.model, search.sigma_cutoff, i, j)
        ax.plot(x, y, color="orange", lw=1.5, zorder=3, label=f"fit, {search.sigma_cutoff:g} sigma")
        if mask_cutoff is not None and mask_cutoff != search.sigma_cutoff:
            x, y = qc.projected_ellipse(search.model, mask_cutoff, i, j)
            ax.plot(
                x, y, "--", color="orange", lw=1.2, zorder=3, label=f"mask, {mask_cutoff:g} sigma"
            )
        ax.set_xlabel(OFFSET_LABELS[i])
        ax.set_ylabel(OFFSET_LABELS[j])
        ax.set_xlim(-0.5, 0.5)
        ax.set_ylim(-0.5, 0.5)
        ax.set_aspect("equal")
        fig.colorbar(h[3], ax=ax, shrink=0.8, label="peak pixels")
    axs[0].legend(loc="upper left", fontsize=8, markerscale=4)
    fig.suptitle(
        f"Fractional Miller offsets of {len(search.offsets)} peak pixels "
        f"(r0 = {', '.join(f'{v:.4f}' for v in search.model.r0)})"
    )
    _save(fig, path)


def mahalanobis(search: qc.PeakSearch, path):
    """Squared Mahalanobis distance of the peak pixels against chi-square(3)."""
    d2 = search.d2
    cut2 = search.sigma_cutoff**2
    top = 3.0 * cut2  # far outliers (d^2 in the hundreds) would flatten the plot
    fig, ax = plt.subplots(figsize=(7, 4.4), constrained_layout=True)
    edges = np.linspace(0, top, 81)
    dens = np.histogram(np.minimum(d2, top * (1 - 1e-9)), bins=edges)[0] / (
        len(d2) * np.diff(edges)
    )
    ax.stairs(dens, edges, fill=True, alpha=0.5, label=f"peak pixels (last bin: >= {top:g})")
    x = np.linspace(0, top, 400)
    ax.plot(x, qc.chi2_3_pdf(x), "k-", lw=1.5, label="chi-square, 3 d.o.f.")
    ax.axvline(cut2, color="tab:red", ls="--", label=f"cutoff {search.sigma_cutoff:g}^2")
    beyond = float(np.mean(d2 > cut2))
    ax.set_yscale("log")
    ax.set_ylim(0.5 / (len(d2) * (edges[1] - edges[0])), None)
    ax.set_xlim(0, top)
    ax.set_xlabel("squared Mahalanobis distance d^2 under the fitted model")
    ax.set_ylabel("density")
    ax.set_title(f"beyond cutoff: {beyond:.2%} of peak pixels (Gaussian: {qc.chi2_3_sf(cut2):.2%})")
    ax.legend(fontsize=8)
    _save(fig, path)


def count_histogram(search: qc.PeakSearch, path):
    """Pixel values (log-log), with count_threshold and the automatic suggestion."""
    edges, density = qc.log_binned_histogram(search.histogram)
    fig, ax = plt.subplots(figsize=(7, 4.4), constrained_layout=True)
    # empty bins are gaps (NaN), not steps bridging them
    ax.stairs(np.where(density > 0, density, np.nan), edges, color="k", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.axvline(
        search.count_threshold,
        color="tab:red",
        label=f"count_threshold {search.count_threshold:g}",
    )
    ax.axvline(
        search.suggested_threshold,
        color="tab:blue",
        ls="--",
        label=f"suggested (10 x median) {search.suggested_threshold:g}",
    )
    zero = search.histogram[0] / max(1, search.histogram.sum())
    ax.set_xlabel("counts per pixel")
    ax.set_ylabel(f"pixels per count (every {search.histogram_stride}th pixel)")
    ax.set_title(f"Pixel values of the sweep ({zero:.1%} of valid pixels are 0)")
    ax.legend(fontsize=8)
    _save(fig, path)


def _show_frame(ax, image, mask, lo, hi, outline=False):
    # invalid (-1) -> the "bad" colour; clip explicitly so over-range counts (spot centres)
    # draw as the darkest shade after resampling rather than wrapping to the "over" colour
    shown = np.ma.array(np.clip(image.astype(float), lo, hi), mask=image < 0)
    cmap = plt.get_cmap(IMAGE_CMAP).copy()
    cmap.set_bad(INVALID_COLOUR)
    ax.imshow(
        shown,
        cmap=cmap,
        norm=LogNorm(lo, hi, clip=True),
        interpolation="antialiased" if not outline else "nearest",
    )
    if outline:
        ax.contour(mask.astype(float), levels=[0.5], colors=[MASK_RGBA[:3]], linewidths=0.8)
    else:
        pooled = _pool_any(mask)
        overlay = np.zeros(pooled.shape + (4,), np.float32)
        overlay[pooled] = MASK_RGBA
        ny, nx = mask.shape
        ax.imshow(overlay, interpolation="nearest", extent=(-0.5, nx - 0.5, ny - 0.5, -0.5))
    ax.set_xticks([])
    ax.set_yticks([])


def _pool_any(mask: np.ndarray, target: int = 500) -> np.ndarray:
    """Mask reduced by blocks (a block is masked if any pixel in it is) so that a few masked
    pixels stay visible when a whole detector is drawn a few hundred pixels wide."""
    f = max(1, -(-max(mask.shape) // target))
    ny, nx = (-(-n // f) * f for n in mask.shape)
    padded = np.zeros((ny, nx), bool)
    padded[: mask.shape[0], : mask.shape[1]] = mask
    return padded.reshape(ny // f, f, nx // f, f).any(axis=(1, 3))


def frames_with_mask(frames, path, zoom: int = 64):
    """Top: whole frames with the mask overlaid; bottom: the region around the frame's
    brightest pixel with the mask outlined, so spots can be seen inside it.

    ``frames``: list of (index, phi, image int32 with -1 invalid, mask bool).
    """
    fig, axs = plt.subplots(2, len(frames), figsize=(4.4 * len(frames), 9), squeeze=False)
    for k, (i, phi, image, mask) in enumerate(frames):
        lo, hi = qc.display_range(image)
        _show_frame(axs[0, k], image, mask, lo, hi)
        axs[0, k].set_title(f"frame {i} (phi {phi:.2f} deg), {mask.mean():.1%} masked")
        window = qc.crop_around(image.shape, qc.brightest_valid(image), zoom)
        _show_frame(axs[1, k], image[window], mask[window], lo, hi, outline=True)
        axs[1, k].set_title(
            f"rows {window[0].start}-{window[0].stop - 1}, "
            f"cols {window[1].start}-{window[1].stop - 1}",
            fontsize=9,
        )
        rect = plt.Rectangle(
            (window[1].start, window[0].start), zoom, zoom, fill=False, ec="orange", lw=1
        )
        axs[0, k].add_patch(rect)
    fig.suptitle(
        "Counts (log, 1st-99.9th percentile), masked pixels red, invalid pixels blue; "
        "bottom: brightest region, mask outlined"
    )
    fig.tight_layout()
    _save(fig, path)


def masked_fraction(phi, fraction, path):
    fig, ax = plt.subplots(figsize=(7, 3.8), constrained_layout=True)
    ax.plot(phi, 100 * np.asarray(fraction), "-", color="tab:red", lw=1)
    ax.set_xlabel("phi (deg)")
    ax.set_ylabel("masked pixels (%)")
    ax.set_ylim(0, None)
    ax.set_title(f"Masked fraction per frame (mean {100 * np.mean(fraction):.2f} %)")
    ax.grid(alpha=0.3)
    _save(fig, path)


def binned_background(binned: binning.BinnedBackground, path):
    """One image per phi bin, on one colour scale (1st-99th percentile)."""
    n = binned.rate.shape[0]
    cols = min(n, 5)
    rows = -(-n // cols)
    fig, axs = plt.subplots(
        rows, cols, figsize=(3.3 * cols, 3.3 * rows + 0.6), squeeze=False, constrained_layout=True
    )
    finite = binned.rate[np.isfinite(binned.rate)]
    lo, hi = np.percentile(finite, [1, 99]) if finite.size else (0, 1)
    cmap = plt.get_cmap("magma").copy()
    cmap.set_bad("#9a9a9a")
    extent = (binned.ix[0], binned.ix[-1], binned.iy[-1], binned.iy[0])
    im = None
    for k in range(rows * cols):
        ax = axs[k // cols, k % cols]
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= n:
            ax.axis("off")
            continue
        im = ax.imshow(
            np.ma.masked_invalid(binned.rate[k]), cmap=cmap, vmin=lo, vmax=hi, extent=extent
        )
        ax.set_title(f"phi {binned.phi[k]:.1f} deg", fontsize=9)
    fig.colorbar(im, ax=axs, shrink=0.8, label="counts / s / pixel")
    fig.suptitle("Binned background (grey: no valid pixel in the bin)")
    _save(fig, path)


def radial_profile(s, profile, phi, path):
    fig, ax = plt.subplots(figsize=(7, 4.4), constrained_layout=True)
    colours = plt.get_cmap("viridis")(np.linspace(0, 1, max(2, len(phi))))
    for k in range(len(phi)):
        ax.plot(s, profile[k], "-", color=colours[k], lw=1.2, label=f"phi {phi[k]:.1f} deg")
    ax.set_xlabel("|s| = 1/d (1/Angstrom)")
    ax.set_ylabel("mean rate (counts / s / pixel)")
    ax.set_title("Radial profile of the binned background")
    ax.grid(alpha=0.3)
    if len(phi) <= 12:
        ax.legend(fontsize=7, ncol=2)
    sec = ax.secondary_xaxis(
        "top", functions=(lambda x: 1 / np.maximum(x, 1e-6), lambda d: 1 / np.maximum(d, 1e-6))
    )
    lo, hi = ax.get_xlim()
    sec.set_xticks([d for d in (50, 20, 10, 5, 4, 3, 2.5, 2, 1.5, 1.2, 1) if lo < 1 / d < hi])
    sec.set_xlabel("d (Angstrom)")
    _save(fig, path)


# -- diffuse maps ---------------------------------------------------------------------------------


def map_sections(values: np.ndarray, axes, path, title: str = ""):
    """The three central sections (hk0, h0l, 0kl) of a map (nh, nk, nl), NaN = no data."""
    names = ("h", "k", "l")
    centre = [int(np.argmin(np.abs(a))) for a in axes]
    sections = [
        ("hk0", values[:, :, centre[2]], (0, 1)),
        ("h0l", values[:, centre[1], :], (0, 2)),
        ("0kl", values[centre[0], :, :], (1, 2)),
    ]
    finite = values[np.isfinite(values)]
    lo, hi = np.percentile(finite, [1, 99]) if finite.size else (0, 1)
    fig, axs = plt.subplots(1, 3, figsize=(13, 4.6), constrained_layout=True)
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad("#dddddd")
    for ax, (label, sec, (i, j)) in zip(axs, sections, strict=True):
        ext = [axes[i][0], axes[i][-1], axes[j][0], axes[j][-1]]
        im = ax.imshow(sec.T, origin="lower", extent=ext, cmap=cmap, vmin=lo, vmax=hi,
                       aspect="equal", interpolation="nearest")  # fmt: skip
        ax.set_xlabel(names[i])
        ax.set_ylabel(names[j])
        ax.set_title(f"{label} section")
    fig.colorbar(im, ax=axs, shrink=0.8, label="intensity (grey: no data)")
    if title:
        fig.suptitle(title)
    _save(fig, path)


def _resolution_curve(s_mid, values, ylabel, title):
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    ax.plot(s_mid, values, "o-")
    ax.set_xlabel("s = 1/d (1/Å)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig, ax


def isotropic_average(s_mid, mean_intensity, path):
    fig, _ = _resolution_curve(s_mid, mean_intensity, "mean merged intensity", "isotropic average")
    _save(fig, path)


def cc_half(s_mid, cc, path):
    fig, ax = _resolution_curve(s_mid, cc, "CC1/2", "random-half correlation against resolution")
    ax.set_ylim(min(0.0, np.nanmin(cc) if np.isfinite(cc).any() else 0.0), 1.02)
    ax.axhline(1.0, color="0.6", lw=0.8)
    _save(fig, path)


def multiplicity_histogram(count, path):
    count = np.asarray(count)
    count = count[count > 0]
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    top = int(count.max()) if count.size else 1
    ax.hist(count, bins=np.arange(0.5, top + 1.5), color="#4477aa")
    ax.set_xlabel("observations per voxel (multiplicity)")
    ax.set_ylabel("voxels")
    ax.set_yscale("log")
    ax.set_title("multiplicity")
    _save(fig, path)


# -- scaling ---------------------------------------------------------------------------------------


def _not_fitted(ax, what):
    ax.text(0.5, 0.5, f"{what}\nnot fitted", ha="center", va="center", transform=ax.transAxes,
            color="0.4")  # fmt: skip
    ax.set_xticks([])
    ax.set_yticks([])


def _panel_map(fig, ax, axes, values, label, title):
    """A factor over the detector (values[ix, iy]) as an image in detector orientation."""
    ix, iy = axes["ix"], axes["iy"]
    im = ax.imshow(values.T, origin="upper", extent=[ix[0], ix[-1], iy[-1], iy[0]],
                   cmap="RdBu_r", aspect="equal")  # fmt: skip
    fig.colorbar(im, ax=ax, shrink=0.8, label=label)
    ax.set_xlabel("x (pixels, fast)")
    ax.set_ylabel("y (pixels, slow)")
    ax.set_title(title)


def scale_factors(factors: list[dict], names: list[str], path):
    """The fitted factors: b(phi) of every sweep, d(x, y), c(s) (mean over phi) of every
    sweep, and a(x, y) of the first sweep at its middle phi. ``factors``: per sweep,
    {kind: (axes, values on the grid)} as scales.nxs holds them."""
    fig, axs = plt.subplots(2, 2, figsize=(12, 8.5), constrained_layout=True)
    ax = axs[0, 0]
    if any("scaling" in f for f in factors):
        for f, name in zip(factors, names, strict=True):
            if "scaling" in f:
                axes, u = f["scaling"]
                ax.plot(axes["phi"], u, ".-", label=name)
        ax.set_xlabel("phi (degrees)")
        ax.set_ylabel("b")
        ax.set_title("scale b(phi) per sweep")
        ax.grid(alpha=0.3)
        if len(names) <= 12:
            ax.legend(fontsize=7)
    else:
        _not_fitted(ax, "b(phi)")
    ax = axs[0, 1]
    if "detector" in factors[0]:
        axes, u = factors[0]["detector"]
        _panel_map(fig, ax, axes, u, "d", "detector response d(x, y), all sweeps")
    else:
        _not_fitted(ax, "d(x, y)")
    ax = axs[1, 0]
    if any("offset" in f for f in factors):
        for f, name in zip(factors, names, strict=True):
            if "offset" in f:
                axes, u = f["offset"]
                ax.plot(axes["s"], u.mean(axis=1), ".-", label=name)
        ax.set_xlabel("s = 1/d (1/Å)")
        ax.set_ylabel("c (mean over phi)")
        ax.set_title("offset c(s)")
        ax.grid(alpha=0.3)
    else:
        _not_fitted(ax, "offset c(s, phi)")
    ax = axs[1, 1]
    if "absorption" in factors[0]:
        axes, u = factors[0]["absorption"]
        mid = u.shape[2] // 2
        title = f"absorption a(x, y) of {names[0]} at phi {axes['phi'][mid]:g}"
        _panel_map(fig, ax, axes, u[:, :, mid], "a", title)
    else:
        _not_fitted(ax, "a(x, y, phi)")
    _save(fig, path)


def scaling_cc(q: qc.ScalingQC, path):
    """CC1/2 and the Friedel-pair correlation against resolution, before and after scaling."""
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    ax.plot(q.s_mid, q.cc_half_before, "o--", color="#4477aa", label="CC1/2, unscaled")
    ax.plot(q.s_mid, q.cc_half_after, "o-", color="#4477aa", label="CC1/2, scaled")
    if np.isfinite(q.friedel_after).any():
        ax.plot(q.s_mid, q.friedel_before, "s--", color="#cc6677", label="Friedel pairs, unscaled")
        ax.plot(q.s_mid, q.friedel_after, "s-", color="#cc6677", label="Friedel pairs, scaled")
    ax.set_xlabel("s = 1/d (1/Å)")
    ax.set_ylabel("correlation")
    ax.set_title("half-data correlations before and after scaling")
    ax.axhline(1.0, color="0.6", lw=0.8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def sweep_agreement(q: qc.ScalingQC, names: list[str], path):
    """Each sweep's own scaled merge against the merged map, by resolution shell."""
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for cc, name in zip(q.sweep_cc, names, strict=True):
        ax.plot(q.s_mid, cc, "o-", label=name)
    ax.set_xlabel("s = 1/d (1/Å)")
    ax.set_ylabel("CC with the merged map")
    ax.set_title("per-sweep agreement with the merged map (scaled)")
    ax.grid(alpha=0.3)
    if len(names) <= 12:
        ax.legend(fontsize=8)
    _save(fig, path)
