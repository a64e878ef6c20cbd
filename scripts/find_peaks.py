#!/usr/bin/env python3
"""Find Bragg peak pixels and fit the peak model (mdx2 tutorial part 3).

Every pixel above --count_threshold (invalid pixels ignored) is indexed; its fractional Miller
offsets (dh, dk, dl) form a cloud, to which a 3-D anisotropic Gaussian is fitted (r0 and
covariance); points beyond --sigma_cutoff are flagged as outliers and the model refitted once.
--count_threshold auto estimates the background level and uses 10x it.

For a sweep split over jobs: run with --slab K N (whole frame-chunks of slab job K of N) or
--frames START STOP per job (search only, writes a partial file), then once with
--gather PART ... to fit; the result equals a single run.
"""

import math
from concurrent.futures import ThreadPoolExecutor

from diffuseflow import cli
from diffuseflow.algorithms.importing import GeometryFile
from diffuseflow.algorithms.peaks import (
    HotPixels,
    fit_hot_pixels,
    listed_hot_pixels,
    read_hot_pixels,
    search_hot_pixels,
    suggest_threshold,
    write_hot_pixels,
    write_search,
)
from diffuseflow.errors import InputError
from diffuseflow.io import nexus


def threshold_arg(text):
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"--count_threshold must be a number or 'auto', is {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise InputError(f"--count_threshold must be a finite number >= 0 or 'auto', is {text}")
    return value


def main(argv):
    p = cli.parser("find_peaks.py", __doc__)
    p.add_argument("geom", metavar="GEOM", help="geometry.nxs")
    p.add_argument("data", metavar="DATA", help="data.nxs")
    p.add_argument(
        "--count_threshold",
        type=threshold_arg,
        help="pixels with counts > this are peak pixels; 'auto' = 10x background "
        "(required, no default; with --gather optional, checked against the partial searches)",
    )
    p.add_argument(
        "--sigma_cutoff",
        type=cli.positive("--sigma_cutoff"),
        default=3.0,
        help="outlier rejection level of the fit (Mahalanobis distance)",
    )
    p.add_argument(
        "--frames",
        type=int,
        nargs=2,
        metavar=("START", "STOP"),
        help="search only frames [START, STOP) and write a partial file (no fit); default: all",
    )
    cli.add_slab(p, "search")
    p.add_argument(
        "--gather",
        nargs="+",
        metavar="PART",
        help="fit the peak model from partial files written with --frames or --slab; "
        "default: search the whole sweep",
    )
    p.add_argument("--outfile", default="peaks.nxs", help="output file")
    cli.add_nproc(p)
    a = p.parse_args(argv)
    cli.check_output(a.outfile)
    cli.set_threads(a.nproc)
    job = cli.check_slab(a.slab)
    if a.frames and job:
        raise InputError("give --frames or --slab, not both")
    if a.gather and (a.frames or job):
        raise InputError("--gather fits the partial searches; drop --frames/--slab")
    if not a.gather and a.count_threshold is None:
        raise InputError("--count_threshold is required (a number or 'auto')")
    parts = {f"partial search {k}": p for k, p in enumerate(a.gather or [])}
    nexus.check_same_sweep({"geometry": a.geom, "data": a.data, **parts})
    geomfile = GeometryFile(a.geom)
    geomfile.check_convention(a.mdx2_compat)
    with nexus.ImageSeries(a.data) as series, ThreadPoolExecutor(a.nproc) as pool:
        geomfile.check_matches(series)
        phi_axis = series.phi
        if job:
            a.frames = nexus.job_frames(series.shape[0], series.chunks[0], *job)
        if a.gather:
            hot = HotPixels.concat([read_hot_pixels(part) for part in a.gather])
            if hot.frames != (0, series.shape[0]):
                raise InputError(
                    f"partial searches cover frames {hot.frames}, not the whole "
                    f"sweep (0, {series.shape[0]})"
                )
            threshold = hot.threshold
            # a numeric --count_threshold must be the one the parts were searched with
            if a.count_threshold not in (None, "auto") and a.count_threshold != threshold:
                raise InputError(
                    f"the partial searches used count_threshold {threshold:g}, not "
                    f"{a.count_threshold:g}; rerun them"
                )
        else:
            threshold = a.count_threshold
            if threshold == "auto":  # needs the background level before the search
                threshold = suggest_threshold(series, pool=pool)["threshold"]
                cli.log(f"count_threshold auto: {threshold:g}")
            hot, why_not = listed_hot_pixels(series, threshold, a.frames)
            if hot is None:
                cli.log(f"{why_not}: searching the stack (a pass over every frame)")
                hot = search_hot_pixels(series, threshold, a.frames, pool, log=cli.log)
            else:
                cli.log(
                    f"{len(hot.frame)} pixels above {threshold:g} from the import's strong-pixel "
                    "list (no pass over the stack)"
                )
    inputs = [a.geom, a.data, *(a.gather or [])]
    if a.frames:
        params = {"count_threshold": threshold, "frames": list(a.frames), "slab": a.slab}
        with nexus.atomic_output(a.outfile) as tmp:
            with nexus.new_file(
                tmp, "find_peaks --frames", params, inputs, nexus.sweep_of(a.data)
            ) as f:
                write_hot_pixels(f["entry"], hot, phi_axis)
        cli.log(f"frames {a.frames[0]} to {a.frames[1] - 1}: {len(hot.frame)} peak pixels")
        return
    fit = fit_hot_pixels(
        geomfile, hot, phi_axis, a.sigma_cutoff, a.mdx2_compat, a.data, log=cli.log
    )
    stats, phi, iy, ix, outliers = fit.stats, fit.phi, fit.iy, fit.ix, fit.outliers
    params = {
        "count_threshold": threshold,
        "count_threshold_requested": a.count_threshold,
        "suggested_count_threshold": stats["threshold"],
        "background_median": stats["median"],
        "sigma_cutoff": a.sigma_cutoff,
        "mdx2_compat": a.mdx2_compat,
    }
    with nexus.atomic_output(a.outfile) as tmp:
        with nexus.new_file(tmp, "find_peaks", params, inputs, nexus.sweep_of(a.data)) as f:
            nexus.write_peak_model(f["entry"], fit.model.r0, fit.model.sigma)
            nexus.write_peaks(f["entry"], "peaks", phi, iy, ix)
            nexus.write_peaks(f["entry"], "outliers", phi[outliers], iy[outliers], ix[outliers])
            write_search(f["entry"], hot, fit)


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
