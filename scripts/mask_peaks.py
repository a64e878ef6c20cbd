#!/usr/bin/env python3
"""Mask Bragg peaks (mdx2 tutorial part 3): a pixel is masked where it lies within
--sigma_cutoff of an allowed reflection's Gaussian, or is a peak pixel from find_peaks.

Allowed = not systematically absent in the crystal's space group (all absences, via gemmi), or
lattice centring only (mdx2's rule) with --absences centring or --mdx2_compat. --bragg writes
the complement instead (Bragg regions only, no peak pixels). Written slab by slab to the bool
dataset /entry/mask/signal. Split over jobs: --slab K N per job, then --gather PART ....
"""

from diffuseflow import cli
from diffuseflow.algorithms.importing import GeometryFile
from diffuseflow.algorithms.mask import (
    PeakMasker,
    check_peaks_inside,
    hot_pixel_indices,
    write_mask,
)
from diffuseflow.algorithms.peaks import PeakModel
from diffuseflow.io import nexus


def main(argv):
    p = cli.parser("mask_peaks.py", __doc__)
    p.add_argument("geom", metavar="GEOM", help="geometry.nxs")
    p.add_argument("data", metavar="DATA", help="data.nxs (axes and chunks; pixels not read)")
    p.add_argument("peaks", metavar="PEAKS", help="peaks.nxs from find_peaks")
    p.add_argument(
        "--sigma_cutoff",
        type=cli.positive("--sigma_cutoff"),
        default=3.0,
        help="ellipsoid contour level of the mask (Mahalanobis distance)",
    )
    p.add_argument("--bragg", action="store_true", help="keep only the Bragg regions")
    p.add_argument(
        "--absences",
        choices=["full", "centring"],
        help="absence rule (default: full; centring with --mdx2_compat)",
    )
    p.add_argument("--outfile", default="mask.nxs", help="output file")
    cli.add_slab(p, "mask")
    cli.add_gather(p)
    cli.add_nproc(p)
    a = p.parse_args(argv)
    cli.check_output(a.outfile)
    job = cli.check_slab(a.slab)
    cli.set_threads(a.nproc)
    absences = a.absences or ("centring" if a.mdx2_compat else "full")
    params = {
        "sigma_cutoff": a.sigma_cutoff,
        "bragg": a.bragg,
        "absences": absences,
        "mdx2_compat": a.mdx2_compat,
    }
    if cli.gather_if_asked(a, params):
        return
    nexus.check_same_sweep({"geometry": a.geom, "data": a.data, "peaks": a.peaks})
    geomfile = GeometryFile(a.geom)
    geomfile.check_convention(a.mdx2_compat)
    with nexus.open_input(a.peaks, "peaks.nxs", ["peak_model", "peaks"]) as f:
        model = PeakModel(f["entry/peak_model/r0"][()], f["entry/peak_model/sigma"][()])
        peaks = nexus.read_peaks(f, "peaks")
    with nexus.ImageSeries(a.data) as series:
        geomfile.check_matches(series)
        shape, chunks, codec = series.shape, series.chunks, series.codec
        axes = (series.phi, series.iy, series.ix)
    frames = nexus.job_frames(shape[0], chunks[0], *job) if job else None
    masker = PeakMasker(
        geomfile, model, a.sigma_cutoff, a.mdx2_compat, absences, axes[0], shape[1], shape[2]
    )
    check_peaks_inside(peaks, axes, a.peaks, a.data)
    hot = hot_pixel_indices(*peaks, *axes)
    with nexus.atomic_output(a.outfile) as tmp:
        with nexus.new_file(
            tmp,
            "mask_peaks",
            params,
            [a.geom, a.data, a.peaks],
            nexus.sweep_of(a.data),
            streamed=True,
        ) as f:
            if job:
                nexus.mark_partial(f, frames, job)
            dset = nexus.mask_dataset(f["entry"], axes, chunks, codec)
            writer = nexus.StackWriter(dset, threads=a.nproc)
            try:
                per_frame = write_mask(
                    masker, axes, shape, dset.chunks, hot, a.bragg, writer, frames, log=cli.log
                )
            finally:
                writer.close()
            nexus.write_mask_counts(f["entry"], per_frame)


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
