"""The diffuse map against the simulator's true diffuse intensity, on both presets.

Each sweep is simulated with a known D(hkl) (isotropic halo and solvent ring, a smooth
anisotropic term and anisotropic halos around the Bragg positions, all Laue-symmetric) on top of
air scatter that its background sweep measures, and taken through import, find_peaks,
mask_peaks, bin_image_series, integrate, correct and merge. The truth per voxel is what the
integrated pixels see of D (``simulate.voxel_truth``, grouped by gemmi's symmetry orbits, not by
diffuseflow's asymmetric-unit code).
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import reduce_sweep, run_script

from diffuseflow.geometry.model import SweepGeometry
from diffuseflow.io.expt import read_expt
from diffuseflow.io.tables import read_table
from diffuseflow.simulate import load_simulation, orbit_keys, preset, voxel_truth, write_sweeps

# 12 degrees of rotation: enough voxels seen three times or more to score; exposures long
# enough that a voxel's noise (~3 %) is well below the structure of D
SWEEPS = {
    "insulin": dict(nx=981, ny=460, n_frames=60, osc=0.2, exposure=0.25, bkg_frames=12, seed=3),
    "p212121": dict(
        nx=1040, ny=520, n_frames=48, osc=0.25, bkg_frames=6, seed=5, phi_start=38.0,
        distance=100.0,
    ),
}  # fmt: skip


@pytest.fixture(scope="module", params=sorted(SWEEPS))
def reduced(request, tmp_path_factory):
    name = request.param
    d = tmp_path_factory.mktemp(f"diffuse_{name}")
    write_sweeps(preset(name, **SWEEPS[name]), d, log=None)
    reduce_sweep(d, to="merge", merge=("--outlier", 5, "--split", "randomHalf"))
    sim = load_simulation(d / "truth.json")
    geom = SweepGeometry(read_expt(d / "crystal/sweep.expt"))
    with h5py.File(d / "data.nxs") as fd, h5py.File(d / "mask.nxs") as fm:
        data, mask = fd["entry/image_series/data"], fm["entry/mask/signal"]
        keys, truth, _ = voxel_truth(sim, geom, lambda i: (data[i] == -1) | mask[i], (3, 3, 3))
    return d, sim, keys, truth


def _scored(reduced, merged="merged.nxs"):
    d, sim, keys, truth = reduced
    m = read_table(d / merged)
    k = orbit_keys(sim.space_group, m.voxels())
    pos = np.clip(np.searchsorted(keys, k), 0, len(keys) - 1)
    assert np.all(keys[pos] == k), "a merged voxel no integrated pixel belongs to"
    return m, truth[pos]


def test_map_agrees_with_true_diffuse_intensity(reduced):
    m, truth = _scored(reduced)
    intensity = m["intensity"].astype(float)
    sigma = m["intensity_error"].astype(float)
    sel = (m["count"] >= 3) & np.isfinite(intensity)
    assert sel.sum() > 5000
    cc = np.corrcoef(intensity[sel], truth[sel])[0, 1]
    z = (intensity[sel] - truth[sel]) / sigma[sel]
    assert cc >= 0.99, cc
    assert abs(z.mean()) <= 0.1, z.mean()
    assert 0.8 <= np.sqrt(np.mean(z**2)) <= 1.25, np.sqrt(np.mean(z**2))
    # honest errors at every multiplicity, not only on average
    for low, high in ((1, 2), (2, 3), (3, 10**6)):
        band = (m["count"] >= low) & (m["count"] < high) & np.isfinite(intensity)
        zb = (intensity[band] - truth[band]) / sigma[band]
        assert abs(zb.mean()) <= 0.1 and 0.8 <= np.sqrt(np.mean(zb**2)) <= 1.25, (low, zb)


def _shell_ratios(m, truth, n=10):
    intensity = m["intensity"].astype(float)
    s = m["s"].astype(float)
    ok = np.isfinite(intensity)
    edges = np.quantile(s[ok], np.linspace(0, 1, n + 1))
    idx = np.clip(np.searchsorted(edges, s[ok], side="right") - 1, 0, n - 1)
    return np.array([intensity[ok][idx == j].mean() / truth[ok][idx == j].mean() for j in range(n)])


def test_no_air_scatter_left_in_the_isotropic_average(reduced):
    m, truth = _scored(reduced)
    ratios = _shell_ratios(m, truth)
    assert np.all(np.abs(ratios - 1) <= 0.02), ratios
    # the same check fails without the background subtraction: air scatter is the residue
    d = reduced[0]
    run_script("correct", d / "geometry.nxs", d / "integrated.nxs",
               "--outfile", d / "corrected_nobkg.nxs")  # fmt: skip
    run_script("merge", d / "corrected_nobkg.nxs", "--outfile", d / "merged_nobkg.nxs")
    m2, truth2 = _scored(reduced, "merged_nobkg.nxs")
    assert _shell_ratios(m2, truth2)[0] > 1.1


def _z(reduced, merged):
    m, truth = _scored(reduced, merged)
    intensity = m["intensity"].astype(float)
    sel = (m["count"] >= 3) & np.isfinite(intensity)
    return (intensity[sel] - truth[sel]) / m["intensity_error"][sel].astype(float)


def test_mdx2_weights_bias_the_merge_low(reduced):
    """mdx2's weights (each observation's own counts) on the same table: an observation that
    fluctuated low weighs more, so the merge is biased low; the expected-count weights are what
    makes the mean z of the test above vanish."""
    d = reduced[0]
    run_script("merge", d / "corrected.nxs", "--mdx2_compat", "--outfile", d / "merged_m.nxs")
    ours, theirs = _z(reduced, "merged.nxs"), _z(reduced, "merged_m.nxs")
    assert theirs.mean() < -0.05 and theirs.mean() < ours.mean() - 0.05, (ours, theirs)


def test_random_halves_agree_and_reproduce(reduced):
    d = reduced[0]
    m, truth = _scored(reduced)
    a, b = m["group_0_intensity"].astype(float), m["group_1_intensity"].astype(float)
    ok = np.isfinite(a) & np.isfinite(b)
    cc = np.corrcoef(a[ok], b[ok])[0, 1]
    # CC1/2 as the truth's spread and the halves' own errors predict it
    var_t = truth[ok].var()
    e0, e1 = (m[f"group_{j}_intensity_error"][ok].astype(float) for j in (0, 1))
    predicted = var_t / np.sqrt((var_t + np.mean(e0**2)) * (var_t + np.mean(e1**2)))
    assert abs(cc - predicted) < 0.03, (cc, predicted)
    assert np.all(m["group_0_count"] + m["group_1_count"] == m["count"])
    # halves of equal size (within one) where no outlier was removed after the split
    run_script("merge", d / "corrected.nxs", "--split", "randomHalf", "--outfile",
               d / "merged_halves.nxs")  # fmt: skip
    h = read_table(d / "merged_halves.nxs")
    assert np.all(np.abs(h["group_0_count"] - h["group_1_count"]) <= 1)
    run_script("merge", d / "corrected.nxs", "--outlier", 5, "--split", "randomHalf",
               "--outfile", d / "merged_again.nxs")  # fmt: skip
    again = read_table(d / "merged_again.nxs")
    for c in m.columns:
        np.testing.assert_array_equal(m[c], again[c])


def test_background_outside_its_sweep_is_dropped_and_counted(reduced, tmp_path):
    """A background sweep covering only the first part of the rotation: observations beyond
    it are dropped, counted in the log and in the file."""
    d = reduced[0]
    expt = read_expt(d / "background/sweep.expt")
    n = expt.scan.num_images
    last = max(2, n // 3)
    run_script("import_data", d / "background/sweep.expt", "--frames", 1, last,
               "--outfile", tmp_path / "bkg_part.nxs")  # fmt: skip
    run_script("bin_image_series", tmp_path / "bkg_part.nxs", 1, 20, 20, "--valid_range", 0, 200,
               "--outfile", tmp_path / "binned_part.nxs")  # fmt: skip
    proc = run_script("correct", d / "geometry.nxs", d / "integrated.nxs", "--background",
                      tmp_path / "binned_part.nxs", "--outfile", tmp_path / "c.nxs")  # fmt: skip
    phi_end = expt.scan.phi_start + expt.scan.phi_width * last
    integrated = read_table(d / "integrated.nxs")
    expect = int(np.sum(integrated["phi"].astype(float) > phi_end))
    assert expect > 100
    said = proc.stdout + proc.stderr
    assert f"dropped {expect} observations outside the background sweep's rotation range" in said
    out = read_table(tmp_path / "c.nxs")
    assert len(out) == len(integrated) - expect - out.attrs.get("diffuseflow_empty_background", 0)
    assert out.attrs["diffuseflow_outside_background_phi"] == expect
    assert np.all(np.isfinite(out["intensity"]))
