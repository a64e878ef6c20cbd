#!/usr/bin/env python3
"""QC figures and a summary table for one sweep's results directory.

A crystal sweep (geometry.nxs, data.nxs, peaks.nxs, mask.nxs) gives offsets.png (the peak-pixel
offset cloud with the fitted ellipse and outliers), mahalanobis.png (d^2 against chi-square(3)),
counts.png (pixel-value histogram, threshold and suggestion), frames.png (start, middle and end
frames with the mask), masked_fraction.png (per frame against phi). A background sweep
(bkg_data.nxs, bkg_data_binned.nxs) gives background.png (one image per phi bin) and radial.png
(radial profile). Both write summary.tsv (full precision) and summary.html.

Example: python scripts/plot_qc.py results/demo -o results/demo/qc --background
results/demo_background/bkg_data_binned.nxs --benchmarks benchmarks
"""

from pathlib import Path

import h5py

from diffuseflow import cli, figures
from diffuseflow.algorithms import binning, qc
from diffuseflow.errors import InputError
from diffuseflow.io import nexus

CRYSTAL_FILES = ("geometry.nxs", "data.nxs", "peaks.nxs", "mask.nxs")
BACKGROUND_FILES = ("bkg_data.nxs", "bkg_data_binned.nxs")


def crystal_figures(sweep: Path, out: Path, background, benchmarks):
    search = qc.read_peak_search(sweep / "peaks.nxs")
    mask_cutoff = nexus.provenance(sweep / "mask.nxs")["parameters"].get("sigma_cutoff")
    figures.offset_cloud(search, out / "offsets.png", mask_cutoff)
    figures.mahalanobis(search, out / "mahalanobis.png")
    figures.count_histogram(search, out / "counts.png")
    with nexus.ImageSeries(sweep / "data.nxs") as series, h5py.File(sweep / "mask.nxs") as m:
        n, ny, nx = series.shape
        phi = series.phi
        mask = m["entry/mask/signal"]
        if mask.shape != series.shape:
            raise InputError(
                f"{sweep / 'mask.nxs'}: mask shape {mask.shape} != data shape {series.shape}"
            )
        frames = [
            (i, phi[i], series.read(i, i + 1)[0], mask[i].astype(bool)) for i in qc.sample_frames(n)
        ]
    figures.frames_with_mask(frames, out / "frames.png")
    per_frame = nexus.read_mask_counts(sweep / "mask.nxs")
    figures.masked_fraction(phi, per_frame / (ny * nx), out / "masked_fraction.png")
    return qc.crystal_summary(sweep, background, benchmarks, search, per_frame)


def background_figures(sweep: Path, out: Path, benchmarks):
    binned = binning.read_binned(sweep / "bkg_data_binned.nxs")
    figures.binned_background(binned, out / "background.png")
    expt = qc.read_experiment(sweep / "bkg_data.nxs")
    if expt is None:
        raise InputError(
            f"{sweep / 'bkg_data.nxs'}: no experiment record (written by mdx2 or an older "
            "diffuseflow); re-import it with import_data.py for the radial profile"
        )
    s = qc.resolution_of_bins(expt, binned.iy, binned.ix)
    shells, profile = qc.radial_profile(binned.rate, s)
    figures.radial_profile(shells, profile, binned.phi, out / "radial.png")
    return qc.background_summary(sweep, benchmarks)


def main(argv):
    p = cli.parser("plot_qc.py", __doc__, compat=False)
    p.add_argument("sweep", metavar="DIR", help="a sweep's results directory")
    p.add_argument(
        "-o", "--outdir", required=True, help="where to write the figures (required; no default)"
    )
    p.add_argument(
        "--background",
        metavar="BINNED",
        help="the crystal sweep's bkg_data_binned.nxs (adds its mean rate to the summary); "
        "default: none",
    )
    p.add_argument(
        "--benchmarks",
        metavar="DIR",
        help="Snakemake benchmark directory (adds step run times to the summary); default: none",
    )
    p.add_argument(
        "--kind",
        choices=["auto", "crystal", "background"],
        default="auto",
        help="which figure set (auto: crystal if the crystal files are present)",
    )
    a = p.parse_args(argv)
    sweep = Path(a.sweep)
    if not sweep.is_dir():
        raise InputError(f"{sweep}: no such results directory")
    have = {f for f in CRYSTAL_FILES + BACKGROUND_FILES if (sweep / f).exists()}
    if a.background and not Path(a.background).exists():
        raise InputError(f"--background {a.background}: no such file")
    out = Path(a.outdir)
    cli.check_output(out / "summary.tsv")
    out.mkdir(parents=True, exist_ok=True)
    with figures.written_atomically(out, ".plot_qc.") as (tmp, made):
        crystal = have.issuperset(CRYSTAL_FILES)
        background = have.issuperset(BACKGROUND_FILES)
        if a.kind == "crystal" and not crystal or a.kind == "background" and not background:
            need = CRYSTAL_FILES if a.kind == "crystal" else BACKGROUND_FILES
            raise InputError(
                f"{sweep}: --kind {a.kind} needs {', '.join(need)}; found {sorted(have) or 'none'}"
            )
        if crystal and a.kind != "background":
            nexus.check_same_sweep({f: sweep / f for f in CRYSTAL_FILES})
            rows = crystal_figures(sweep, tmp, a.background, a.benchmarks)
            kind = "crystal sweep"
        elif background:
            nexus.check_same_sweep({f: sweep / f for f in BACKGROUND_FILES})
            rows = background_figures(sweep, tmp, a.benchmarks)
            kind = "background sweep"
        else:
            raise InputError(
                f"{sweep}: neither a crystal sweep ({', '.join(CRYSTAL_FILES)}) nor a "
                f"background sweep ({', '.join(BACKGROUND_FILES)}); found {sorted(have) or 'none'}"
            )
        qc.write_summary_tsv(rows, tmp / "summary.tsv")
        (tmp / "summary.html").write_text(qc.summary_html(f"{sweep.name}: {kind}", rows))
    for q, v, u in rows:
        cli.log(f"{q}: {v:.6g} {u}" if isinstance(v, float) else f"{q}: {v} {u}")
    cli.log(f"wrote {', '.join(f.name for f in made)} to {out}")


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
