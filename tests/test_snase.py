"""The real SNase sweep (96 x 1 deg SMV .img.bz2, CCD) from ../shared/data/snase."""

import bz2

import h5py
import numpy as np
import pytest
import yaml
from conftest import ROOT, run_script

#: the untrusted regions of config/snase.yaml (beamstop and LUNUS' 40-984 window)
_SNASE_CONFIG = yaml.safe_load((ROOT / "config" / "snase.yaml").read_text())
UNTRUSTED = _SNASE_CONFIG["datasets"]["snase"]["import"]["untrusted"]


@pytest.fixture(scope="module")
def snase_run(snase, tmp_path_factory):
    """The SNase sweep through the workflow with config/snase.yaml (import with its untrusted
    regions, find_peaks with an automatic threshold, mask_peaks)."""
    import subprocess
    import sys

    d = tmp_path_factory.mktemp("snase_wf")
    cfg = yaml.safe_load((ROOT / "config" / "snase.yaml").read_text())
    cfg["datasets"]["snase"]["expt"] = str(snase / "snase.expt")
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
         "--directory", str(d), "--configfile", str(d / "config.yaml"), "--cores", "2"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return d / "results" / "snase"


def untrusted_mask():
    m = np.zeros((1024, 1024), bool)
    for spec in UNTRUSTED:
        x0, x1, y0, y1 = (int(v) for v in spec.split("=")[1].split(","))
        m[y0:y1, x0:x1] = True
    return m


def raw_frame(snase, k):
    with bz2.open(snase / "images" / f"snc_newhead_{k:05d}.img.bz2") as fh:
        return np.frombuffer(fh.read()[512:], "<u2").reshape(1024, 1024)


def test_snase_data_equals_raw_frames(snase, snase_run):
    with h5py.File(snase_run / "data.nxs") as f:
        data = f["entry/image_series/data"]
        assert data.shape == (96, 1024, 1024)
        phi = f["entry/image_series/phi"][()]
        np.testing.assert_allclose(phi, np.arange(96.0))  # frame k centred on PHI = k - 1
        for k in (1, 30, 59, 96):
            raw = raw_frame(snase, k).astype(np.int32)
            got = data[k - 1]
            invalid = (raw < 1) | (raw > 65534) | untrusted_mask()  # trusted_range [1, 65534]
            np.testing.assert_array_equal(got[~invalid], raw[~invalid])
            assert np.all(got[invalid] == -1)
            assert 44_000 < np.count_nonzero(raw == 0) < 45_000  # README: ~44,490 zeros


def test_snase_strong_pixels_index_near_integers(snase, snase_run):
    """Pixels far above background sit near integer hkl (README check A: ~0.88 within 0.2)."""
    from diffuseflow.algorithms.importing import GeometryFile

    geom = GeometryFile(snase_run / "geometry.nxs").sweep_geometry(False)
    with h5py.File(snase_run / "data.nxs") as f:
        frames = [5, 30, 60, 90]
        f_, y, x = [], [], []
        for k in frames:
            d = f["entry/image_series/data"][k - 1]
            yy, xx = np.nonzero(d > 5000)
            f_ += [k - 1] * len(yy)
            y += list(yy)
            x += list(xx)
    phi = geom.scan.frame_centres()[np.array(f_)]
    hkl = geom.hkl(phi, np.array(y), np.array(x))
    off = hkl - np.rint(hkl)
    share = np.mean(np.all(np.abs(off) < 0.2, axis=1))
    assert len(off) > 2000 and share > 0.8


def test_snase_peak_model(snase_run, capsys):
    import json

    from diffuseflow.algorithms.peaks import PeakModel

    with h5py.File(snase_run / "peaks.nxs") as f:
        model = PeakModel(f["entry/peak_model/r0"][()], f["entry/peak_model/sigma"][()])
        n_peaks = len(f["entry/peaks/observed_phi"])
        n_out = len(f["entry/outliers/observed_phi"])
        params = json.loads(f.attrs["diffuseflow_parameters"])
    semi, _ = model.axes()
    with capsys.disabled():
        print(
            f"\nSNase: count_threshold {params['count_threshold']:g} (background median "
            f"{params['background_median']:g}), {n_peaks} peak pixels, {n_out} outliers, "
            f"r0 {np.round(model.r0, 4)}, semi-axes {np.round(semi, 4)}"
        )
    # a CCD at 300-800 ADU: the automatic threshold lands in the thousands, not at 20
    assert 2000 < params["count_threshold"] < 10000
    assert n_peaks > 10000
    assert np.abs(model.r0).max() < 0.03  # the refined model indexes the spots closely
    assert semi.max() < 0.15


def test_snase_strong_pixels_are_masked(snase_run, capsys):
    """Nearly every pixel far above its local background is masked."""
    from scipy.ndimage import median_filter

    fractions = []
    with h5py.File(snase_run / "data.nxs") as f, h5py.File(snase_run / "mask.nxs") as m:
        for k in (5, 30, 60, 90):
            frame = f["entry/image_series/data"][k - 1].astype(float)
            valid = frame >= 0
            local = median_filter(np.where(valid, frame, np.nan), size=15, mode="nearest")
            strong = valid & (frame > 3 * local) & (frame - local > 1000)
            masked = m["entry/mask/signal"][k - 1]
            fractions.append((int(strong.sum()), float(masked[strong].mean())))
        total = float(m["entry/mask/signal"][()].mean())
    with capsys.disabled():
        print(
            f"\nSNase: masked {total:.2%} of pixels; strong pixels masked per frame "
            f"(count, fraction): {fractions}"
        )
    for n, frac in fractions:
        assert n > 100 and frac > 0.9


def test_snase_binning_with_mask(snase_run, tmp_path):
    run_script(
        "bin_image_series",
        snase_run / "data.nxs",
        8,
        64,
        64,
        "--mask",
        snase_run / "mask.nxs",
        "--outfile",
        tmp_path / "masked.nxs",
    )
    run_script(
        "bin_image_series",
        snase_run / "data.nxs",
        8,
        64,
        64,
        "--outfile",
        tmp_path / "plain.nxs",
    )
    with h5py.File(tmp_path / "masked.nxs") as a, h5py.File(tmp_path / "plain.nxs") as b:
        ga, gb = a["entry/binned_image_series"], b["entry/binned_image_series"]
        sa, na, ca = ga["signal"][()], ga["n_valid"][()], ga["counts"][()]
        nb, cb = gb["n_valid"][()], gb["counts"][()]
    assert sa.shape == (12, 16, 16)
    assert np.all(na <= nb) and na.sum() < nb.sum()
    # the pixels the mask removed are Bragg peaks and their surroundings: brighter on average
    removed_mean = (cb.sum() - ca.sum()) / (nb.sum() - na.sum())
    kept_mean = ca.sum() / na.sum()
    assert removed_mean > 1.5 * kept_mean, (removed_mean, kept_mean)  # random removal: 1.0
    assert 100 < np.nanmedian(sa) < 500  # ADU per second: 300-800 ADU per 2 s frame


def test_snase_qc_figures_show_spots_inside_the_mask(snase_run):
    """The workflow's QC for the real sweep: every figure, the zoomed spot of each sampled
    frame masked, the untrusted regions drawn in the invalid colour, the summary = files."""
    from matplotlib.colors import to_rgb
    from matplotlib.image import imread
    from qc_checks import (
        CRYSTAL_FIGURES,
        assert_summary_matches,
        check_png,
        expected_crystal_numbers,
        summary,
    )

    from diffuseflow.algorithms import qc
    from diffuseflow.figures import INVALID_COLOUR

    out = snase_run / "qc"
    for fig in CRYSTAL_FIGURES:
        check_png(out / f"{fig}.png")
    assert_summary_matches(summary(out / "summary.tsv"), expected_crystal_numbers(snase_run))
    with h5py.File(snase_run / "data.nxs") as f, h5py.File(snase_run / "mask.nxs") as m:
        for i in qc.sample_frames(96):
            image = f["entry/image_series/data"][i]
            assert m["entry/mask/signal"][i][qc.brightest_valid(image)], i
            assert np.all(image[untrusted_mask()] == -1)
    rgb = imread(out / "frames.png")[..., :3]
    blue = np.all(np.abs(rgb - to_rgb(INVALID_COLOUR)) < 0.03, axis=-1)
    reddish = (rgb[..., 0] > rgb[..., 1] + 0.2) & (rgb[..., 0] > rgb[..., 2] + 0.2)
    assert blue.mean() > 0.02  # beamstop and the 40-984 window frame
    assert reddish.mean() > 0.002  # the mask overlay


def test_snase_runs_to_a_map(snase_run):
    """The real sweep (no background sweep) through integrate, correct, merge and map: a map
    with signal at low resolution (CC1/2 of the halves), and the CCD's ADU scatter measured
    and folded into the errors rather than mistaken for outliers."""
    from diffuseflow.algorithms.maps import shell_stats
    from diffuseflow.algorithms.qc import read_summary_tsv
    from diffuseflow.io.tables import read_table

    maps = snase_run.parent / "maps" / "snase"
    merged = read_table(maps / "merged.nxs")
    seen = merged["count"] > 0
    assert seen.sum() > 500_000
    assert np.all(np.isfinite(merged["intensity"][seen]))
    stats = shell_stats(merged, 10)
    assert stats.cc_half[0] > 0.6  # lowest-resolution shell
    summary = read_summary_tsv(maps / "qc" / "summary.tsv")
    scale = float(summary["scatter / counting variance (error scale^2)"])
    assert scale > 10  # ADU of a phosphor CCD, unscaled: far from photon counting
    assert int(summary["outliers rejected"]) < 0.01 * int(summary["observations"])
    with h5py.File(maps / "map.nxs") as f:
        assert np.isfinite(f["entry/intensity/signal"][()]).mean() > 0.5
