#!/usr/bin/env python3
"""Bin an image series into a count-rate map (mdx2 tutorial part 4).

Bins of BF frames x BY rows x BX columns (each axis cut into ceil(n/b) nearly equal sections);
a bin's value is the mean of its valid counts divided by the mean exposure time (counts/s).
Invalid pixels (-1), counts outside --valid_range (inclusive) and --mask pixels are excluded;
empty bins are NaN. Each bin also stores its summed counts, valid pixels and seconds.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from diffuseflow import cli
from diffuseflow.algorithms import binning
from diffuseflow.errors import InputError
from diffuseflow.io import nexus


def main(argv):
    p = cli.parser("bin_image_series.py", __doc__, compat=False)
    p.add_argument("data", metavar="DATA", help="image series, e.g. bkg_data.nxs")
    p.add_argument("bins", metavar="B", type=int, nargs=3, help="bin size: frames, rows, columns")
    p.add_argument(
        "--valid_range",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        help="inclusive range of valid counts; default: no range (every valid pixel)",
    )
    p.add_argument("--mask", help="mask.nxs (True = exclude); default: no mask")
    p.add_argument("--outfile", default="binned.nxs", help="output file")
    cli.add_nproc(p)
    a = p.parse_args(argv)
    cli.check_output(a.outfile)
    cli.set_threads(a.nproc)
    valid_range = binning.check_valid_range(a.valid_range)
    nexus.check_same_sweep({"data": a.data, "mask": a.mask})
    with nexus.ImageSeries(a.data) as series, ThreadPoolExecutor(a.nproc) as pool:
        binning.check_bins(a.bins, series.shape)
        result = binning.bin_series(series, a.bins, valid_range, a.mask, pool, log=cli.log)
    if np.all(result.n_valid == 0):
        raise InputError(f"{a.data}: no valid pixel to bin (check --valid_range and --mask)")
    params = {
        "bins": a.bins,
        "valid_range": valid_range,
        "mask": a.mask,
    }
    inputs = [a.data] + ([a.mask] if a.mask else [])
    with nexus.atomic_output(a.outfile) as tmp:
        with nexus.new_file(tmp, "bin_image_series", params, inputs, nexus.sweep_of(a.data)) as f:
            nexus.nxdata(
                f["entry"],
                "binned_image_series",
                result.signal,
                {"phi": result.phi, "iy": result.iy, "ix": result.ix},
                cls="GridData",
                counts=result.counts,
                n_valid=result.n_valid,
                seconds=result.seconds,
                rate_error=result.rate_error,
            )
    cli.log(
        f"Binned shape (phi, iy, ix): {result.signal.shape}; "
        f"mean rate {np.nanmean(result.signal):.4g} counts/s; "
        f"{int(np.isnan(result.signal).sum())} empty bins"
    )


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
