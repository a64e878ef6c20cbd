#!/usr/bin/env python3
"""Import the images of a DIALS experiment into data.nxs: an int32 image stack (-1 = invalid)
in mdx2 1.0.5's ImageSeries layout, chunked and compressed, streamed slab by slab.

Invalid pixels are those outside the panel's trusted range, in its mask rectangles (module
gaps), in a DIALS mask or Eiger pixel mask, Eiger marker values (2^bit_depth - 1 and - 2),
and in --untrusted regions.

A sweep split over jobs: each runs with --slab K N (its whole frame-chunks into a partial
file), then one run with --gather PART ... assembles them; the result equals a single run.
"""

from diffuseflow import cli
from diffuseflow.algorithms.importing import DEFAULT_STRONG_FLOOR, geometry_summary, write_data
from diffuseflow.io import nexus
from diffuseflow.io.expt import read_expt
from diffuseflow.io.images import parse_untrusted


def floor_arg(text):
    if text.lower() == "none":
        return None
    return cli.nonnegative("--strong_pixel_floor")(text)


def main(argv):
    p = cli.parser("import_data.py", __doc__, compat=False)
    p.add_argument("expt", metavar="EXPT", help="DIALS experiments file")
    cli.add_experiment_selection(p)
    p.add_argument(
        "--chunks",
        type=int,
        nargs=3,
        metavar=("F", "Y", "X"),
        help="HDF5 chunk shape; a value <= 0 keeps the default for that axis (default: "
        "mdx2's 5-6 degrees of frames, capped at 256 MB, by 212 x 494 pixel tiles)",
    )
    p.add_argument(
        "--untrusted",
        nargs="*",
        default=[],
        metavar="REGION",
        help="untrusted regions, DIALS syntax: circle=x,y,r rectangle=x0,x1,y0,y1 "
        "(x fast, y slow, pixels)",
    )
    p.add_argument(
        "--reader",
        choices=["builtin", "dxtbx"],
        default="builtin",
        help="image reader: built-in (fabio/h5py) or dxtbx (needs DIALS)",
    )
    p.add_argument(
        "--threshold_channel",
        type=int,
        default=1,
        metavar="K",
        help="Eiger files with several threshold channels (4-D /entry/data/data): read threshold_K",
    )
    p.add_argument(
        "--compression",
        choices=nexus.CODECS,
        default=nexus.CODECS[0],
        help="codec of the stack: bslz4 (bitshuffle/LZ4; readers need hdf5plugin) or gzip "
        "(+ shuffle; any HDF5 reader) (default: %(default)s)",
    )
    p.add_argument(
        "--strong_pixel_floor",
        type=floor_arg,
        default=DEFAULT_STRONG_FLOOR,
        help="list every valid pixel above this many counts (the floor rises per frame where "
        "more than 0.2 %% of its pixels lie above it) for find_peaks, which then needs no "
        "second pass over the stack for a count_threshold at or above it; 'none': no list "
        "(a background sweep) (default: %(default)g)",
    )
    p.add_argument("--outfile", default="data.nxs", help="output file")
    cli.add_slab(p, "read")
    cli.add_gather(p)
    cli.add_nproc(p)
    a = p.parse_args(argv)
    cli.check_output(a.outfile)
    job = cli.check_slab(a.slab)
    if cli.gather_if_asked(a, {"expt": a.expt}):
        return
    cli.set_threads(a.nproc)
    regions = parse_untrusted(a.untrusted, "--untrusted")
    expt = read_expt(a.expt, a.experiment, a.frames)
    cli.log(geometry_summary(expt) if expt.crystal else f"{expt.scan.num_images} frames")
    write_data(
        expt,
        a.outfile,
        a.chunks,
        regions,
        a.nproc,
        {"expt": a.expt},
        log=cli.log,
        reader=a.reader,
        job=job,
        threshold_channel=a.threshold_channel,
        compression=a.compression,
        strong_floor=a.strong_pixel_floor,
    )


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
