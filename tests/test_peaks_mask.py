"""find_peaks and mask_peaks against the simulator's truth (I 21 3 and P 21 21 21)."""

import re

import h5py
import numpy as np
import pytest
from conftest import run_script

from diffuseflow.algorithms.importing import GeometryFile
from diffuseflow.algorithms.peaks import PeakModel
from diffuseflow.geometry.symmetry import is_allowed
from diffuseflow.io.nexus import read_peaks
from diffuseflow.simulate import load_simulation


def fitted(run):
    with h5py.File(run / "peaks.nxs") as f:
        model = PeakModel(f["entry/peak_model/r0"][()], f["entry/peak_model/sigma"][()])
        peaks = read_peaks(f, "peaks")
        outliers = read_peaks(f, "outliers")
    return model, peaks, outliers


@pytest.fixture(params=["insulin_run", "p212121_run"])
def run(request):
    return request.getfixturevalue(request.param)


def test_peak_model_recovers_truth(run):
    sim = load_simulation(run / "truth.json")
    model, peaks, outliers = fitted(run)
    assert len(peaks[0]) > 2000 and 0 < len(outliers[0]) < 0.1 * len(peaks[0])
    # r0 within 0.005 r.l.u. of the simulated offset
    assert np.abs(model.r0 - sim.r0).max() < 0.005, (model.r0, sim.r0)
    # shape: principal axes within 10 deg, axis ratios within 15 % (size depends on threshold)
    t_val, t_vec = np.linalg.eigh(sim.cov)
    f_val, f_vec = np.linalg.eigh(model.cov)
    for k in range(3):
        angle = np.degrees(np.arccos(min(1.0, abs(t_vec[:, k] @ f_vec[:, k]))))
        assert angle < 10, (k, angle)
    t_ratio = np.sqrt(t_val / t_val[-1])
    f_ratio = np.sqrt(f_val / f_val[-1])
    np.testing.assert_allclose(f_ratio, t_ratio, rtol=0.15)


def independent_mask(run, sigma_cutoff=3.0):
    """'allowed reflection and d2 < cutoff^2, plus peak pixels' in plain numpy + gemmi."""
    gf = GeometryFile(run / "geometry.nxs")
    geom = gf.sweep_geometry(False)
    sg = gf.space_group()
    model, peaks, _ = fitted(run)
    P = np.linalg.inv(model.cov)
    n = geom.scan.num_images
    ny, nx = geom.shape
    q = geom.scattering_vector_image()
    phis = geom.scan.frame_centres()
    mask = np.zeros((n, ny, nx), bool)
    absent_close = 0
    for i in range(n):
        hkl = np.einsum("ij,jyx->yxi", geom.lab_to_hkl(phis[i]), q)
        H = np.rint(hkl)
        d = hkl - H - model.r0
        d2 = np.einsum("yxi,ij,yxj->yx", d, P, d)
        near = d2 < sigma_cutoff**2
        allowed = np.zeros((ny, nx), bool)
        allowed[near] = is_allowed(sg, H[near].astype(int), "full")
        absent_close += int(np.count_nonzero(near & ~allowed))
        mask[i] = near & allowed
    f = np.rint(np.interp(peaks[0], phis, np.arange(n))).astype(int)
    mask[f, peaks[1].astype(int), peaks[2].astype(int)] = True
    return mask, absent_close


def test_mask_equals_independent_evaluation(run):
    expected, absent_close = independent_mask(run)
    with h5py.File(run / "mask.nxs") as f:
        got = f["entry/mask/signal"][()]
        assert f["entry/mask/signal"].dtype == bool
        assert f["entry/mask"].attrs["mdx2_class"] == "GridData"
    mismatch = np.count_nonzero(got != expected)
    assert mismatch == 0, f"{mismatch} pixels differ"
    if run.name.startswith("p212121"):
        # screw-axis absences are in the swept volume, and none of them is masked
        assert absent_close > 0


def test_bragg_photons_inside_the_mask(run, capsys):
    sim = load_simulation(run / "truth.json")
    geom = sim.geometry(expt_path=run / "crystal" / "sweep.expt")
    sim.prepare(geom)
    with h5py.File(run / "mask.nxs") as f:
        mask = f["entry/mask/signal"][()]
    inside = total = 0.0
    for i in range(mask.shape[0]):
        b = sim.bragg_expected(i)
        total += b.sum()
        inside += b[mask[i]].sum()
    fraction = inside / total
    with capsys.disabled():
        print(f"\n{run.name}: Bragg photons inside the mask at sigma_cutoff 3: {fraction:.2%}")
    assert fraction > 0.95


def test_results_do_not_depend_on_worker_count(insulin_run, tmp_path):
    d = insulin_run
    run_script(
        "find_peaks",
        d / "geometry.nxs",
        d / "data.nxs",
        "--count_threshold",
        20,
        "--outfile",
        tmp_path / "p1.nxs",
        "--nproc",
        1,
    )
    run_script(
        "mask_peaks",
        d / "geometry.nxs",
        d / "data.nxs",
        tmp_path / "p1.nxs",
        "--outfile",
        tmp_path / "m1.nxs",
        "--nproc",
        1,
    )
    with h5py.File(tmp_path / "p1.nxs") as a, h5py.File(d / "peaks.nxs") as b:
        for key in (
            "peak_model/r0",
            "peak_model/sigma",
            "peaks/observed_phi",
            "outliers/observed_px_x",
        ):
            np.testing.assert_array_equal(a[f"entry/{key}"][()], b[f"entry/{key}"][()])
    with h5py.File(tmp_path / "m1.nxs") as a, h5py.File(d / "mask.nxs") as b:
        np.testing.assert_array_equal(a["entry/mask/signal"][()], b["entry/mask/signal"][()])


def test_bragg_option_is_the_complement_without_peak_pixels(insulin_run, tmp_path):
    d = insulin_run
    run_script(
        "mask_peaks",
        d / "geometry.nxs",
        d / "data.nxs",
        d / "peaks.nxs",
        "--bragg",
        "--outfile",
        tmp_path / "bragg.nxs",
    )
    expected, _ = independent_mask(d)
    _, peaks, _ = fitted(d)
    with h5py.File(tmp_path / "bragg.nxs") as f:
        bragg = f["entry/mask/signal"][()]
    # outside the peak pixels, --bragg is the exact complement of the ellipsoid mask
    hot = np.zeros_like(bragg)
    phis = GeometryFile(d / "geometry.nxs").sweep_geometry(False).scan.frame_centres()
    fi = np.rint(np.interp(peaks[0], phis, np.arange(len(phis)))).astype(int)
    hot[fi, peaks[1].astype(int), peaks[2].astype(int)] = True
    np.testing.assert_array_equal(bragg[~hot], ~expected[~hot])


def test_mdx2_compat_mode_runs_on_the_corner_grid(insulin_run, tmp_path):
    d = insulin_run
    expt = d / "crystal" / "sweep.expt"
    run_script("import_geometry", expt, "--mdx2_compat", "--outfile", tmp_path / "g.nxs")
    run_script(
        "find_peaks",
        tmp_path / "g.nxs",
        d / "data.nxs",
        "--count_threshold",
        20,
        "--mdx2_compat",
        "--outfile",
        tmp_path / "p.nxs",
    )
    run_script(
        "mask_peaks",
        tmp_path / "g.nxs",
        d / "data.nxs",
        tmp_path / "p.nxs",
        "--mdx2_compat",
        "--outfile",
        tmp_path / "m.nxs",
    )
    with h5py.File(tmp_path / "p.nxs") as a, h5py.File(d / "peaks.nxs") as b:
        # same hot pixels; r0 shifts by the half-pixel corner offset, a few hundredths at most
        assert len(a["entry/peaks/observed_phi"]) == len(b["entry/peaks/observed_phi"])
        shift = a["entry/peak_model/r0"][()] - b["entry/peak_model/r0"][()]
        assert 1e-4 < np.abs(shift).max() < 0.05
    # physical grid + compat flag is refused with a clear message
    proc = run_script(
        "find_peaks",
        d / "geometry.nxs",
        d / "data.nxs",
        "--count_threshold",
        20,
        "--mdx2_compat",
        "--outfile",
        tmp_path / "x.nxs",
        check=False,
    )
    assert proc.returncode == 2 and "--mdx2_compat" in proc.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--count_threshold", 1e9], "no pixel above count_threshold"),
        (["--count_threshold", 20, "--sigma_cutoff", 0], "sigma_cutoff must be > 0"),
        (["--count_threshold", -5], "count_threshold must be a finite number >= 0"),
        (["--count_threshold", "lots"], "must be a number or 'auto'"),
    ],
)
def test_find_peaks_bad_inputs(insulin_run, tmp_path, args, message):
    d = insulin_run
    out = tmp_path / "p.nxs"
    proc = run_script(
        "find_peaks", d / "geometry.nxs", d / "data.nxs", *args, "--outfile", out, check=False
    )
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()


def test_mismatched_geometry_and_data(insulin_run, p212121_run, tmp_path):
    out = tmp_path / "p.nxs"
    proc = run_script(
        "find_peaks",
        p212121_run / "geometry.nxs",
        insulin_run / "data.nxs",
        "--count_threshold",
        20,
        "--outfile",
        out,
        check=False,
    )
    assert proc.returncode == 2 and "different sweeps" in proc.stderr and not out.exists()
    assert str(p212121_run / "geometry.nxs") in proc.stderr
    assert str(insulin_run / "data.nxs") in proc.stderr
    # a data.nxs without the sweep record (as mdx2 writes it): the shape check still refuses
    import shutil

    import h5py

    data = tmp_path / "data.nxs"
    shutil.copyfile(insulin_run / "data.nxs", data)
    with h5py.File(data, "a") as f:
        del f.attrs["diffuseflow_sweep"]
    proc = run_script(
        "find_peaks", p212121_run / "geometry.nxs", data, "--count_threshold", 20,
        "--outfile", out, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "does not match" in proc.stderr and not out.exists()


def test_all_pixels_invalid(insulin_run, tmp_path):
    import shutil

    bad = tmp_path / "invalid.nxs"
    shutil.copy(insulin_run / "data.nxs", bad)
    with h5py.File(bad, "r+") as f:
        d = f["entry/image_series/data"]
        d[...] = np.full(d.shape, -1, np.int32)  # (a broadcast scalar write is very slow)
    proc = run_script(
        "find_peaks",
        insulin_run / "geometry.nxs",
        bad,
        "--count_threshold",
        20,
        "--outfile",
        tmp_path / "p.nxs",
        check=False,
    )
    assert proc.returncode == 2 and "invalid" in proc.stderr


def test_auto_threshold(insulin_run, tmp_path):
    d = insulin_run
    proc = run_script(
        "find_peaks",
        d / "geometry.nxs",
        d / "data.nxs",
        "--count_threshold",
        "auto",
        "--outfile",
        tmp_path / "p.nxs",
    )
    # 10 x the median background (air + diffuse: ~2 counts per 0.1 s pixel), and used
    found = re.search(r"median (\d+),.*suggested count_threshold (\d+)", proc.stdout)
    assert found, proc.stdout
    median, suggested = (int(v) for v in found.groups())
    assert 1 <= median <= 3 and suggested == 10 * median
    assert f"count_threshold auto: {suggested}" in proc.stdout


def test_slab_jobs_then_gather_equal_a_single_run(insulin_run, tmp_path):
    """The sweep split into frame runs (as separate jobs would do), then one gather-and-fit."""
    d = insulin_run
    parts = []
    for a, b in [(0, 7), (7, 20), (20, 30)]:  # deliberately not chunk-aligned
        part = tmp_path / f"part_{a}.nxs"
        run_script(
            "find_peaks",
            d / "geometry.nxs",
            d / "data.nxs",
            "--count_threshold",
            20,
            "--frames",
            a,
            b,
            "--outfile",
            part,
        )
        parts.append(part)
    run_script(
        "find_peaks",
        d / "geometry.nxs",
        d / "data.nxs",
        "--gather",
        *parts[::-1],
        "--outfile",
        tmp_path / "gathered.nxs",
    )
    with h5py.File(tmp_path / "gathered.nxs") as a, h5py.File(d / "peaks.nxs") as b:
        for key in (
            "peak_model/r0",
            "peak_model/sigma",
            "peaks/observed_phi",
            "peaks/observed_px_y",
            "peaks/observed_px_x",
            "outliers/observed_px_x",
        ):
            np.testing.assert_array_equal(a[f"entry/{key}"][()], b[f"entry/{key}"][()])
    # a missing run is refused
    proc = run_script(
        "find_peaks",
        d / "geometry.nxs",
        d / "data.nxs",
        "--gather",
        parts[0],
        parts[2],
        "--outfile",
        tmp_path / "bad.nxs",
        check=False,
    )
    assert proc.returncode == 2 and "do not tile the sweep" in proc.stderr


def test_mask_and_peak_search_in_slab_jobs_equal_one_job(insulin_run, tmp_path):
    """find_peaks --slab K N + --gather and mask_peaks --slab K N + --gather give the single
    job's peaks and mask: 30 frames in chunks of 4 (8 chunks) over 3 jobs (2, 3, 3 chunks)."""
    d = insulin_run
    geom, data = d / "geometry.nxs", tmp_path / "data.nxs"
    run_script("import_data", d / "crystal/sweep.expt", "--chunks", 4, 0, 0, "--outfile", data)
    one_peaks, one_mask = tmp_path / "one_peaks.nxs", tmp_path / "one_mask.nxs"
    run_script("find_peaks", geom, data, "--count_threshold", 20, "--outfile", one_peaks)
    run_script("mask_peaks", geom, data, one_peaks, "--outfile", one_mask)
    jobs = 3
    peak_parts = [tmp_path / f"peaks{k}.nxs" for k in range(jobs)]
    mask_parts = [tmp_path / f"mask{k}.nxs" for k in range(jobs)]
    for k in range(jobs):
        run_script("find_peaks", geom, data, "--count_threshold", 20, "--slab", k, jobs,
                   "--outfile", peak_parts[k])  # fmt: skip
    with h5py.File(peak_parts[2]) as f:
        assert list(f["entry/diffuseflow_search/frames"][()]) == [20, 30]
    run_script("find_peaks", geom, data, "--gather", *peak_parts, "--outfile", tmp_path / "p.nxs")
    for k in range(jobs):
        run_script("mask_peaks", geom, data, tmp_path / "p.nxs", "--slab", k, jobs,
                   "--outfile", mask_parts[k])  # fmt: skip
    run_script("mask_peaks", geom, data, tmp_path / "p.nxs", "--gather", *mask_parts,
               "--outfile", tmp_path / "m.nxs")  # fmt: skip
    with h5py.File(tmp_path / "p.nxs") as a, h5py.File(one_peaks) as b:
        for key in ("peak_model/sigma", "peaks/observed_px_x", "diffuseflow_search/offsets"):
            np.testing.assert_array_equal(a[f"entry/{key}"][()], b[f"entry/{key}"][()])
    with h5py.File(tmp_path / "m.nxs") as a, h5py.File(one_mask) as b:
        np.testing.assert_array_equal(a["entry/mask/signal"][()], b["entry/mask/signal"][()])
        assert a["entry/mask/signal"][()].any()
        np.testing.assert_array_equal(
            a["entry/diffuseflow_mask/masked_pixels"][()],
            b["entry/diffuseflow_mask/masked_pixels"][()],
        )
    # a part masked with another sigma_cutoff is stale: refused by name
    stale = tmp_path / "stale.nxs"
    run_script("mask_peaks", geom, data, tmp_path / "p.nxs", "--slab", 0, jobs,
               "--sigma_cutoff", 2.5, "--outfile", stale)  # fmt: skip
    proc = run_script("mask_peaks", geom, data, tmp_path / "p.nxs", "--gather", stale,
                      *mask_parts[1:], "--outfile", tmp_path / "m2.nxs", check=False)  # fmt: skip
    assert proc.returncode == 2 and "sigma_cutoff=2.5" in proc.stderr
    assert not (tmp_path / "m2.nxs").exists()


def test_auto_threshold_is_the_same_in_every_slab_job(insulin_run, tmp_path):
    """count_threshold auto in slab jobs: each job estimates it from the same sampled slabs of
    the whole sweep, so the parts agree and the gather equals a single auto run."""
    d = insulin_run
    geom, data = d / "geometry.nxs", tmp_path / "data.nxs"
    run_script("import_data", d / "crystal/sweep.expt", "--chunks", 5, 0, 0, "--outfile", data)
    one = tmp_path / "one.nxs"
    run_script("find_peaks", geom, data, "--count_threshold", "auto", "--outfile", one)
    parts = [tmp_path / f"part{k}.nxs" for k in range(2)]
    for k, part in enumerate(parts):
        run_script("find_peaks", geom, data, "--count_threshold", "auto", "--slab", k, 2,
                   "--outfile", part)  # fmt: skip
    run_script("find_peaks", geom, data, "--count_threshold", "auto", "--gather", *parts,
               "--outfile", tmp_path / "gathered.nxs")  # fmt: skip
    with h5py.File(tmp_path / "gathered.nxs") as a, h5py.File(one) as b:
        for key in ("peak_model/r0", "peak_model/sigma", "peaks/observed_px_x"):
            np.testing.assert_array_equal(a[f"entry/{key}"][()], b[f"entry/{key}"][()])
    # a numeric threshold that differs from the parts' is refused, naming both
    proc = run_script("find_peaks", geom, data, "--count_threshold", 999, "--gather", *parts,
                      "--outfile", tmp_path / "bad.nxs", check=False)  # fmt: skip
    assert proc.returncode == 2 and "count_threshold" in proc.stderr and "999" in proc.stderr


@pytest.mark.parametrize("tile", [1, 2, 3, 4, 16])
@pytest.mark.parametrize("sigma_cutoff", [3.0, 8.0])
def test_tiled_mask_kernel_equals_the_pixel_kernel(run, tile, sigma_cutoff):
    """The block-bounding mask kernel gives peak_mask_exact's mask bit for bit on every frame,
    for odd and even blocks, blocks cut by the detector edge, and an ellipsoid so wide that
    few blocks can be skipped; at sigma_cutoff 3 most blocks are skipped (else the bound
    would be doing nothing)."""
    from diffuseflow.algorithms.mask import PeakMasker
    from diffuseflow.geometry.kernels import peak_mask_exact, peak_mask_tiled, pixel_tiles

    model, _, _ = fitted(run)
    geomfile = GeometryFile(run / "geometry.nxs")
    with h5py.File(run / "data.nxs") as f:
        phi = f["entry/image_series/phi"][()]
        _, ny, nx = f["entry/image_series/data"].shape
    m = PeakMasker(geomfile, model, sigma_cutoff, False, "full", phi, ny, nx)
    centre, radius = pixel_tiles(m.q, tile)
    exact = np.empty((ny, nx), bool)
    tiled = np.ones((ny, nx), bool)
    skipped = []
    for i in range(len(phi)):
        M = np.ascontiguousarray(m.M[i])
        peak_mask_exact(m.q, M, m.r0, m.P, m.allowed, m.hmax, m.cutoff2, exact)
        peak_mask_tiled(m.q, centre, radius, tile, M, m.r0, m.P, m.extent, m.allowed, m.hmax,
                        m.cutoff2, tiled)  # fmt: skip
        assert np.array_equal(tiled, exact), f"frame {i}: {np.count_nonzero(tiled != exact)} px"
        assert exact.any()
        # the blocks the bound skips (the kernel's test, in numpy) hold no masked pixel
        c = np.einsum("ab,bij->aij", M, centre) - m.r0[:, None, None]
        reach = m.extent[:, None, None] + np.linalg.norm(M, axis=1)[:, None, None] * radius
        far = (np.abs(c - np.rint(c)) > reach + 1e-9).any(axis=0)
        blocks = np.pad(exact, ((0, -ny % tile), (0, -nx % tile)))
        assert not blocks.reshape(*far.shape[:1], tile, -1, tile).any(axis=(1, 3))[far].any()
        skipped.append(far.mean())
    if sigma_cutoff == 3.0 and tile <= 4:
        assert np.mean(skipped) > 0.5, skipped  # the bound does its job
    print(f"{run.name} tile {tile} sigma {sigma_cutoff}: {np.mean(skipped):.1%} blocks skipped")
