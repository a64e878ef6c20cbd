"""bin_image_series against the simulator's true background rate."""

import h5py
import numpy as np
import pytest
from conftest import run_script

from diffuseflow.algorithms.binning import sections
from diffuseflow.simulate import load_simulation


def test_sections_split_like_mdx2():
    assert np.diff(sections(2527, 20)).tolist() == [20] * 114 + [19] * 13
    assert np.diff(sections(25, 10)).tolist() == [9, 8, 8]
    assert np.diff(sections(60, 7)).tolist() == [7] * 6 + [6] * 3


def binned(path):
    with h5py.File(path) as f:
        g = f["entry/binned_image_series"]
        assert g.attrs["mdx2_class"] == "GridData" and g.attrs["signal"] == "signal"
        return {
            k: g[k][()]
            for k in ("signal", "counts", "n_valid", "seconds", "rate_error", "phi", "iy", "ix")
        }


@pytest.fixture(scope="module")
def background(insulin_run, tmp_path_factory):
    d = tmp_path_factory.mktemp("bin")
    run_script(
        "bin_image_series",
        insulin_run / "bkg_data.nxs",
        2,
        20,
        20,
        "--valid_range",
        0,
        200,
        "--outfile",
        d / "binned.nxs",
        "--nproc",
        2,
    )
    run_script(
        "bin_image_series",
        insulin_run / "bkg_data.nxs",
        2,
        20,
        20,
        "--outfile",
        d / "unbounded.nxs",
    )
    sim = load_simulation(insulin_run / "truth.json")
    geom = sim.geometry("background", insulin_run / "background" / "sweep.expt")
    return d, sim, geom, binned(d / "binned.nxs"), binned(d / "unbounded.nxs")


def true_binned_rate(sim, geom, bkg_nxs, ys, xs):
    """Mean of the true rate over each bin's valid pixels (the binned value's expectation)."""
    rate = sim.background_rate(geom)
    with h5py.File(bkg_nxs) as f:
        valid = f["entry/image_series/data"][0] != -1
    r = np.where(valid, rate, 0.0)
    s = np.add.reduceat(np.add.reduceat(r, ys[:-1], 0), xs[:-1], 1)
    n = np.add.reduceat(np.add.reduceat(valid.astype(float), ys[:-1], 0), xs[:-1], 1)
    with np.errstate(invalid="ignore"):
        return s / n


def test_binned_rate_agrees_with_truth(background, insulin_run):
    d, sim, geom, b, _ = background
    ny, nx = geom.shape
    truth = true_binned_rate(
        sim, geom, insulin_run / "bkg_data.nxs", sections(ny, 20), sections(nx, 20)
    )
    assert b["signal"].shape == (4, 31, 50)
    ok = b["n_valid"] > 0
    assert np.array_equal(np.isnan(b["signal"]), ~ok)  # NaN exactly where a bin is empty
    z = (b["signal"] - truth[None]) / b["rate_error"]
    z = z[ok]
    # every bin within 4 standard errors; pooled deviation consistent with Poisson noise
    assert np.abs(z).max() < 4, np.abs(z).max()
    assert 0.85 < np.mean(z**2) < 1.15, np.mean(z**2)
    # counts / seconds is the same rate when exposures are equal
    np.testing.assert_allclose(b["signal"][ok], b["counts"][ok] / b["seconds"][ok], rtol=1e-12)
    # 1-deg background frames from 160 deg in bins of 2: centres 161, 163, 165, 167
    np.testing.assert_allclose(b["phi"], 161.0 + 2.0 * np.arange(4), atol=1e-9)


def test_valid_range_removes_the_salt_spot(background):
    d, sim, geom, b, unbounded = background
    y, x = sim.salt_spot()
    iy = np.searchsorted(sections(geom.shape[0], 20), y, side="right") - 1
    ix = np.searchsorted(sections(geom.shape[1], 20), x, side="right") - 1
    clean, dirty = b["signal"][:, iy, ix], unbounded["signal"][:, iy, ix]
    err = b["rate_error"][:, iy, ix]
    assert np.all(dirty - clean > 20 * err)  # the salt dominates the unbounded bin
    neighbours = b["signal"][:, iy, ix + 1]
    assert np.all(np.abs(clean - neighbours) < 6 * err)


def test_binning_with_a_mask(insulin_run, tmp_path):
    """A crystal sweep binned with its Bragg mask: masked pixels are excluded."""
    run_script(
        "bin_image_series",
        insulin_run / "data.nxs",
        10,
        50,
        50,
        "--mask",
        insulin_run / "mask.nxs",
        "--outfile",
        tmp_path / "b.nxs",
    )
    run_script(
        "bin_image_series",
        insulin_run / "data.nxs",
        10,
        50,
        50,
        "--outfile",
        tmp_path / "nomask.nxs",
    )
    with h5py.File(insulin_run / "mask.nxs") as f:
        masked = f["entry/mask/signal"][()]
    with h5py.File(insulin_run / "data.nxs") as f:
        valid = f["entry/image_series/data"][()] != -1
    a, b = binned(tmp_path / "b.nxs"), binned(tmp_path / "nomask.nxs")
    assert a["n_valid"].sum() == np.count_nonzero(valid & ~masked)
    assert b["n_valid"].sum() == np.count_nonzero(valid)
    assert np.nansum(a["signal"]) < np.nansum(b["signal"])  # Bragg counts gone


@pytest.mark.parametrize(
    "args, message",
    [
        ([0, 20, 20], "bin size in frames must be > 0"),
        ([2, 20, 5000], "larger than the axis"),
        ([2, 20, 20, "--valid_range", 200, 0], "LO < HI"),
        ([2, 20, 20, "--valid_range", 1e6, 2e6], "no valid pixel"),
    ],
)
def test_bad_inputs(insulin_run, tmp_path, args, message):
    out = tmp_path / "b.nxs"
    proc = run_script(
        "bin_image_series", insulin_run / "bkg_data.nxs", *args, "--outfile", out, check=False
    )
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()


def test_float_valid_range_is_inclusive(insulin_run, tmp_path):
    run_script(
        "bin_image_series",
        insulin_run / "bkg_data.nxs",
        8,
        619,
        981,
        "--valid_range",
        9.5,
        10.0,
        "--outfile",
        tmp_path / "b.nxs",
    )
    b = binned(tmp_path / "b.nxs")
    assert b["signal"].shape == (1, 1, 1) and b["signal"][0, 0, 0] == 10.0
