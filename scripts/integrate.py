#!/usr/bin/env python3
"""Integrate counts on a subdivided Miller grid (mdx2 tutorial part 5) -> integrated.nxs.

Every valid, unmasked pixel goes to its voxel round(hkl * subdivide); per voxel and rotation
pass (observations more than --max_spread degrees apart are kept apart, as mdx2) the table
holds counts, pixels, exposure seconds and the mean phi, iy, ix. Streamed slab by slab: memory
is the table, not the sweep. Split over jobs: --slab K N per job (each writes its partial sums),
then --gather PART ... folds them in rotation order into the same table as one job.
"""

import numpy as np

from diffuseflow import cli
from diffuseflow.algorithms.importing import GeometryFile
from diffuseflow.algorithms.integrate import (
    Accumulator,
    PixelIndexer,
    integrate_series,
    read_partials,
    write_partials,
)
from diffuseflow.errors import InputError
from diffuseflow.io import nexus, tables


def main(argv):
    p = cli.parser("integrate.py", __doc__)
    p.add_argument("geom", metavar="GEOM", help="geometry.nxs")
    p.add_argument("data", metavar="DATA", help="data.nxs")
    p.add_argument("--mask", help="mask.nxs from mask_peaks (default: no mask)")
    p.add_argument(
        "--subdivide",
        type=int,
        nargs=3,
        default=[1, 1, 1],
        metavar=("NH", "NK", "NL"),
        help="voxels per reciprocal lattice unit along h, k, l",
    )
    p.add_argument(
        "--max_spread",
        type=cli.positive("--max_spread"),
        default=1.0,
        help="degrees: a voxel's observations further apart are separate rows (passes n)",
    )
    p.add_argument("--outfile", default="integrated.nxs", help="output file")
    cli.add_slab(p, "integrate")
    cli.add_gather(
        p,
        help="fold the partial sums of the N slab jobs (--slab K N) into --outfile; equals a "
        "single-job run; default: one job",
    )
    cli.add_nproc(p)
    a = p.parse_args(argv)
    cli.check_output(a.outfile)
    job = cli.check_slab(a.slab)
    cli.set_threads(a.nproc)
    params = {
        "subdivide": list(a.subdivide),
        "max_spread": a.max_spread,
        "mask": a.mask is not None,
        "mdx2_compat": a.mdx2_compat,
    }
    inputs = [a.geom, a.data] + ([a.mask] if a.mask else [])
    files = {"geometry": a.geom, "data": a.data}
    if a.mask:
        files["mask"] = a.mask
    nexus.check_same_sweep(files)
    acc = None if job else Accumulator(a.max_spread)
    if a.gather:
        if job:
            raise InputError("give --slab (one job) or --gather (assemble the jobs), not both")
        for part in read_partials(a.gather, params):
            acc.fold(part)
        cli.log(f"gathered {len(a.gather)} slab files")
    else:
        geomfile = GeometryFile(a.geom)
        geomfile.check_convention(a.mdx2_compat)
        with nexus.ImageSeries(a.data) as series:
            geomfile.check_matches(series)
            indexer = PixelIndexer(geomfile, a.mdx2_compat, series.phi, *series.shape[1:])
            frames = nexus.job_frames(series.shape[0], series.chunks[0], *job) if job else None
            mask_file = nexus.open_input(a.mask, "mask.nxs", ["mask"]) if a.mask else None
            try:
                mask_dset = None
                if mask_file is not None:
                    mask_dset = mask_file["entry/mask/signal"]
                    if mask_dset.shape != series.shape:
                        raise InputError(
                            f"{a.mask}: mask shape {mask_dset.shape} does not match {a.data} "
                            f"{series.shape}"
                        )
                partials = integrate_series(
                    series, indexer, mask_dset, a.subdivide, frames, acc, a.nproc, cli.log
                )
            finally:
                if mask_file is not None:
                    mask_file.close()
        if job:
            write_partials(a.outfile, partials, params, inputs, frames, job, nexus.sweep_of(a.data))
            return
    table = acc.table(a.subdivide)
    if len(table) == 0:
        raise InputError(f"{a.data}: no valid, unmasked pixel to integrate")
    tables.write_table(a.outfile, table, "integrate", params, inputs, nexus.sweep_of(a.data))
    vox = table.voxels()
    n_voxels = 1 + int(np.count_nonzero(np.any(vox[1:] != vox[:-1], axis=1)))
    cli.log(
        f"{len(table)} rows ({n_voxels} voxels), {int(table['pixels'].sum())} pixels, "
        f"{int(table['counts'].sum())} counts"
    )


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
