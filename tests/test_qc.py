"""QC report: the numbers behind the figures, the figures themselves, the summary table against
the .nxs files, and the Snakemake report opened in headless Chromium."""

import csv
import os

import h5py
import numpy as np
import pytest
from conftest import run_script, snakemake
from qc_checks import (
    BACKGROUND_FIGURES,
    CRYSTAL_FIGURES,
    assert_summary_matches,
    check_png,
    expected_crystal_numbers,
    summary,
)
from report_browser import find_chromium, shown_figures
from scipy import stats

from diffuseflow.algorithms import qc
from diffuseflow.algorithms.peaks import PeakModel

MAP_FIGURES = ("sections", "isotropic", "cc_half", "multiplicity")
SCALE_FIGURES = ("factors", "scaling_cc", "sweep_agreement")

# -- numbers --------------------------------------------------------------------------------


def test_projected_ellipse_is_the_shadow_of_the_ellipsoid():
    """Extent of the drawn ellipse along any direction = extent of the 3-D ellipsoid's surface
    points projected on that plane."""
    rng = np.random.default_rng(0)
    sigma = rng.normal(size=(3, 3)) * 0.03
    model = PeakModel(np.array([0.01, -0.02, 0.005]), sigma)
    u = rng.normal(size=(400_000, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    surface = model.r0 + 3.0 * u @ sigma.T
    for i, j in ((0, 1), (0, 2), (1, 2)):
        x, y = qc.projected_ellipse(model, 3.0, i, j)
        for t in np.linspace(0, np.pi, 7):
            n = np.array([np.cos(t), np.sin(t)])
            drawn = np.max(x * n[0] + y * n[1])
            true = np.max(surface[:, [i, j]] @ n)
            assert drawn == pytest.approx(true, rel=2e-3)


def test_chi2_3_density_and_tail_match_scipy():
    x = np.linspace(0.01, 30, 50)
    np.testing.assert_allclose(qc.chi2_3_pdf(x), stats.chi2(3).pdf(x), rtol=1e-12)
    for c in (1.0, 4.0, 9.0, 16.0):
        assert qc.chi2_3_sf(c) == pytest.approx(stats.chi2(3).sf(c), rel=1e-12)


def test_log_binned_histogram_keeps_every_pixel():
    hist = np.random.default_rng(1).poisson(50, size=1 << 16).astype(np.int64)
    edges, density = qc.log_binned_histogram(hist)
    assert edges[0] == 1 and edges[-1] == len(hist)
    assert np.sum(density * np.diff(edges)) == pytest.approx(hist[1:].sum())


def test_radial_profile_recovers_a_known_falloff():
    s = np.linspace(0.05, 0.5, 40)[:, None] + np.zeros((1, 30))
    rate = np.stack([2.0 + 10.0 * s, 1.0 + 10.0 * s])
    rate[:, :3, :] = np.nan  # empty bins (beamstop) are ignored
    centres, profile = qc.radial_profile(rate, s, n_shells=10)
    ok = np.isfinite(profile[0])
    np.testing.assert_allclose(profile[0, ok], 2.0 + 10.0 * centres[ok], atol=0.15)
    np.testing.assert_allclose(profile[0, ok] - profile[1, ok], 1.0)


def test_display_range_and_zoom_window():
    img = np.full((50, 60), 10, np.int32)
    img[:5] = -1
    img[20, 58] = 5000
    lo, hi = qc.display_range(img)
    assert lo == 10 and hi >= 100
    assert qc.brightest_valid(img) == (20, 58)
    win = qc.crop_around(img.shape, (20, 58), 16)
    assert (win[0].start, win[0].stop, win[1].start, win[1].stop) == (12, 28, 44, 60)
    assert qc.sample_frames(1) == [0] and qc.sample_frames(10) == [0, 5, 9]


def test_step_seconds_sum_slab_jobs(tmp_path):
    for rule, name, s in (
        ("find_peaks", "x.slab0", 2.5),
        ("find_peaks", "x.slab1", 1.5),
        ("find_peaks", "x_other", 99.0),
        ("mask_peaks", "x", 3.25),
    ):
        (tmp_path / rule).mkdir(exist_ok=True)
        (tmp_path / rule / f"{name}.tsv").write_text(f"s\th:m:s\n{s}\t0:00:0{s}\n")
    assert qc.step_seconds(tmp_path, "x") == {"find_peaks": 4.0, "mask_peaks": 3.25}


# -- figures and summary --------------------------------------------------------------------


def test_plot_qc_standalone_on_a_crystal_sweep(insulin_run, tmp_path):
    """Usable without Snakemake: every crystal figure, and a summary equal to the files."""
    out = tmp_path / "qc"
    proc = run_script("plot_qc", insulin_run, "-o", out)
    assert "peak pixels" in proc.stderr + proc.stdout
    for fig in CRYSTAL_FIGURES:
        check_png(out / f"{fig}.png")
    table = summary(out / "summary.tsv")
    assert_summary_matches(table, expected_crystal_numbers(insulin_run))
    assert "time import" not in table  # no benchmark directory given
    assert "<table>" in (out / "summary.html").read_text()


def test_plot_qc_refuses_a_directory_without_results(tmp_path):
    proc = run_script("plot_qc", tmp_path, "-o", tmp_path / "qc", check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "neither a crystal sweep" in lines[0]
    assert not any((tmp_path / "qc").glob("*.png"))


def test_workflow_qc_figures_and_summaries(workflow_run):
    wd = workflow_run
    crystal, bkg = wd / "results/tiny", wd / "results/tiny_bkg"
    for fig in CRYSTAL_FIGURES:
        check_png(crystal / "qc" / f"{fig}.png")
    for fig in BACKGROUND_FIGURES:
        check_png(bkg / "qc" / f"{fig}.png")
    with h5py.File(bkg / "bkg_data_binned.nxs") as f:
        mean_rate = float(np.nanmean(f["entry/binned_image_series/signal"][()]))
    table = summary(crystal / "qc/summary.tsv")
    assert_summary_matches(
        table, {**expected_crystal_numbers(crystal), "mean background rate": mean_rate}
    )
    btable = summary(bkg / "qc/summary.tsv")
    assert float(btable["mean background rate"]) == pytest.approx(mean_rate, rel=1e-12)
    for sweep, tab, steps in (
        ("tiny", table, ("import_data", "find_peaks", "mask_peaks")),
        ("tiny_bkg", btable, ("import_background", "bin_background")),
    ):
        for rule in steps:
            with open(wd / "benchmarks" / rule / f"{sweep}.tsv", newline="") as fh:
                secs = float(next(csv.DictReader(fh, delimiter="\t"))["s"])
            label = "import" if rule.startswith("import") else rule
            assert float(tab[f"time {label}"]) == pytest.approx(secs, abs=0.006)


def test_report_renders_with_every_figure_in_chromium(workflow_run, tmp_path):
    chromium = find_chromium()
    if chromium is None:
        if os.environ.get("DIFFUSEFLOW_REQUIRE_CHROMIUM"):
            pytest.fail("DIFFUSEFLOW_REQUIRE_CHROMIUM is set but no chromium is installed")
        pytest.skip("no chromium to render the report (apt install chromium)")
    report = tmp_path / "report.html"
    proc = snakemake(workflow_run, "--report", str(report))
    assert proc.returncode == 0 and report.exists(), proc.stderr[-2000:]
    maps = {f"results/maps/tiny/qc/{fig}.png" for fig in MAP_FIGURES}  # the dataset's own map
    maps |= {f"results/maps/tiny/scaling/qc/{fig}.png" for fig in SCALE_FIGURES}
    for category, figures in (("tiny", CRYSTAL_FIGURES), ("tiny_bkg", BACKGROUND_FIGURES)):
        shown = shown_figures(report, category, tmp_path, chromium)
        want = {f"results/{category}/qc/{fig}.png" for fig in figures}
        want |= maps if category == "tiny" else set()
        assert set(shown) == want, shown
        assert all(width >= 500 for width in shown.values()), shown


def test_plot_qc_on_peaks_without_the_search_record(insulin_run, tmp_path):
    """A peaks.nxs from mdx2 (no diffuseflow_search group): one line saying what to do."""
    import shutil

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    for name in ("geometry.nxs", "data.nxs", "peaks.nxs", "mask.nxs"):
        shutil.copy(insulin_run / name, sweep / name)
    with h5py.File(sweep / "peaks.nxs", "a") as f:
        del f["entry/diffuseflow_search"]
    proc = run_script("plot_qc", sweep, "-o", tmp_path / "qc", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "rerun find_peaks" in lines[0]
    assert not list((tmp_path / "qc").glob("*.png"))
