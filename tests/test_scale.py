"""scale against simulated truth: three sweeps of one crystal form at different orientations,
each with its own overall scale and a slow drift b(phi), all seen through one detector whose
response d(x, y) is not flat (simulate.Preset.overall_scale, drift, detector_response,
crystal_rotation_deg). Each is taken through import, find_peaks, mask_peaks, background
binning, integrate and correct, then scaled together and merged. An observation spans the
rotation of its pass (here up to 5 degrees: the stack's frame-chunks), so b(phi) is resolved
on that scale: the drifts are slow (periods of 24-36 degrees).

What a sweep cannot tell apart is not tested: the overall level (the map's scale), and for d
a factor that depends on the scattering angle alone (symmetry mates share |s|, so it trades
with the map's isotropic part).
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import reduce_sweep, run_script
from qc_checks import check_png
from scipy import sparse

from diffuseflow.algorithms import maps, qc
from diffuseflow.algorithms import scale as scaling
from diffuseflow.geometry.model import SweepGeometry
from diffuseflow.io.expt import read_expt
from diffuseflow.io.scales import read_factors
from diffuseflow.io.tables import pack_voxels, read_table
from diffuseflow.simulate import load_simulation, orbit_keys, preset, voxel_truth, write_sweeps

COMMON = dict(nx=981, ny=460, n_frames=60, osc=0.2, exposure=0.25, bkg_frames=12,
              detector_response=0.1)  # fmt: skip
SWEEPS = {
    "a": dict(seed=3, overall_scale=1.3, drift=(-0.008, 0.04, 30.0)),
    "b": dict(seed=5, overall_scale=0.8, drift=(0.006, -0.03, 24.0),
              crystal_rotation_deg=(0.0, 1.0, 0.0, 35.0)),
    "c": dict(seed=6, overall_scale=1.1, drift=(-0.004, 0.05, 36.0),
              crystal_rotation_deg=(0.3, 0.5, 0.8, 70.0)),
}  # fmt: skip
# a 20 x 10 grid for a 981 x 460 panel; mdx2's default smoothness (alpha 1) flattens this
# 10 % response by 2-3 % at the panel's edges (measured), 0.1 follows it within 1.4 %
DETECTOR_GRID = ("--detector.enable", "true", "--detector.nx", 20, "--detector.ny", 10,
                 "--detector.alpha", 0.1)  # fmt: skip


def _truth(d):
    """Orbit keys, truth and weights of the voxels sweep d's integrated pixels see."""
    sim = load_simulation(d / "truth.json")
    geom = SweepGeometry(read_expt(d / "crystal/sweep.expt"))
    with h5py.File(d / "data.nxs") as fd, h5py.File(d / "mask.nxs") as fm:
        data, mask = fd["entry/image_series/data"], fm["entry/mask/signal"]
        return voxel_truth(sim, geom, lambda i: (data[i] == -1) | mask[i], (3, 3, 3))


def _combine(truths):
    """One truth per orbit from several sweeps: their pixels' weighted mean."""
    keys = np.concatenate([t[0] for t in truths])
    num = np.concatenate([t[1] * t[2] for t in truths])
    w = np.concatenate([t[2] for t in truths])
    u, inv = np.unique(keys, return_inverse=True)
    return u, np.bincount(inv, num) / np.bincount(inv, w)


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    dirs, truths = {}, {}
    for name, over in SWEEPS.items():
        d = root / name
        write_sweeps(preset("insulin", **COMMON, **over), d, log=None, workers=2)
        reduce_sweep(d, to="correct")
        dirs[name] = d
        truths[name] = _truth(d)
    corrected = [dirs[n] / "corrected.nxs" for n in SWEEPS]
    scales = [root / f"scales_{n}.nxs" for n in SWEEPS]
    run_script("scale", *corrected, *DETECTOR_GRID, "--outfile", *scales)
    run_script("merge", *corrected, "--scale", *scales, "--split", "randomHalf",
               "--outfile", root / "merged_all.nxs")  # fmt: skip
    run_script("merge", *corrected, "--split", "randomHalf", "--outfile",
               root / "merged_unscaled.nxs")  # fmt: skip
    for n in SWEEPS:  # each sweep alone, scaled alone
        c = dirs[n] / "corrected.nxs"
        run_script("scale", c, *DETECTOR_GRID, "--outfile", root / f"alone_{n}.nxs")
        run_script("merge", c, "--scale", root / f"alone_{n}.nxs", "--split", "randomHalf",
                   "--outfile", root / f"merged_{n}.nxs")  # fmt: skip
    return root, dirs, truths


def _scored(sweeps, merged, names):
    root, dirs, truths = sweeps
    keys, truth = _combine([truths[n] for n in names])
    m = read_table(root / merged)
    sim = load_simulation(dirs[names[0]] / "truth.json")
    k = orbit_keys(sim.space_group, m.voxels())
    pos = np.clip(np.searchsorted(keys, k), 0, len(keys) - 1)
    assert np.all(keys[pos] == k), "a merged voxel no integrated pixel belongs to"
    return m, truth[pos]


def _cc(m, truth, rows=None, min_count=3, shells=12):
    """CC with the truth over voxels (``rows`` of m, or all) seen ``min_count`` times or
    more, after one scale per resolution shell: d's dependence on the scattering angle is
    degenerate with the map's isotropic part (measured here: the map's level drifts by +-4 %
    across the shells with d fitted), so only what lies across each shell is scored."""
    rows = np.arange(len(m)) if rows is None else rows
    intensity = m["intensity"][rows].astype(float)
    sel = (m["count"][rows] >= min_count) & np.isfinite(intensity)
    assert sel.sum() > 3000
    intensity, truth, s = intensity[sel], truth[sel], m["s"][rows][sel].astype(float)
    edges = np.quantile(s, np.linspace(0, 1, shells + 1))
    idx = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, shells - 1)
    level = np.array([intensity[idx == j] @ truth[idx == j] / (truth[idx == j] @ truth[idx == j])
                      for j in range(shells)])  # fmt: skip
    return np.corrcoef(intensity / level[idx], truth)[0, 1]


def test_b_follows_each_sweeps_drift_and_scale(sweeps):
    """b(phi) within 1 % of each sweep's simulated overall scale x drift, the one free
    constant (the map's level) taken out once for all sweeps."""
    root, dirs, _ = sweeps
    ratios = []
    for n in SWEEPS:
        sim = load_simulation(dirs[n] / "truth.json")
        axes, u = read_factors(root / f"scales_{n}.nxs")["scaling"]
        ratios.append(u / sim.beam_scale(axes["phi"]))
    level = np.mean(np.concatenate(ratios))
    for n, r in zip(SWEEPS, ratios, strict=True):
        assert np.max(np.abs(r / level - 1)) <= 0.01, (n, r / level)


def test_d_follows_the_detector_response(sweeps):
    """d(x, y) within 2 % of the simulated response, up to a smooth function of the
    scattering angle (fitted here as a quartic in 2 theta), where data are."""
    root, dirs, _ = sweeps
    sim = load_simulation(dirs["a"] / "truth.json")
    geom = SweepGeometry(read_expt(dirs["a"] / "crystal/sweep.expt"))
    factors = [read_factors(root / f"scales_{n}.nxs")["detector"] for n in SWEEPS]
    axes, u = factors[0]
    for _, other in factors[1:]:  # one detector factor shared by every sweep
        np.testing.assert_array_equal(other, u)
    ix, iy = np.meshgrid(axes["ix"], axes["iy"], indexing="ij")
    truth = sim.detector_response(iy + 0.5, ix + 0.5)
    xyz = geom.lab_position(iy, ix)
    cos2t = xyz @ geom.s0 / (np.linalg.norm(xyz, axis=-1) * np.linalg.norm(geom.s0))
    two_theta = np.degrees(np.arccos(cos2t))
    # the control points the observations reach
    tabs = [read_table(dirs[n] / "corrected.nxs") for n in SWEEPS]
    coords = {c: np.concatenate([t[c].astype(float) for t in tabs]) for c in ("ix", "iy")}
    factor = scaling.Factor("detector", dict(axes))
    support = np.asarray(factor.matrix(coords).sum(axis=0)).ravel().reshape(u.shape, order="F")
    seen = support >= 0.5 * np.median(support)  # a whole cell of data around the point
    assert seen.mean() > 0.9

    def beyond_radial(ratio):
        """ratio over its best quartic in 2 theta: what no isotropic term can explain"""
        ratio = ratio / ratio.mean()
        fit = np.polyfit(two_theta[seen], ratio[seen], 4)
        return np.max(np.abs(ratio[seen] / np.polyval(fit, two_theta[seen]) - 1))

    assert beyond_radial(u / truth) <= 0.02
    assert beyond_radial(1 / truth) > 0.05  # a flat d fails the same check


def _on_voxels_of(merged, single):
    """Rows of ``merged`` and of ``single`` for the voxels both hold (same crystal form)."""
    _, i, j = np.intersect1d(pack_voxels(merged.voxels()), pack_voxels(single.voxels()),
                             return_indices=True)  # fmt: skip
    return i, j


def test_scaled_multi_sweep_map_beats_every_single_sweep(sweeps):
    """CC with the true diffuse intensity: >= 0.99 for the three sweeps scaled and merged
    (voxels seen three times or more; per-shell level, see _cc), higher than each sweep's own
    map on that sweep's voxels, and higher than the same merge unscaled."""
    m_all, t_all = _scored(sweeps, "merged_all.nxs", list(SWEEPS))
    cc_all = _cc(m_all, t_all)
    assert cc_all >= 0.99, cc_all
    for n in SWEEPS:
        m_one, t_one = _scored(sweeps, f"merged_{n}.nxs", [n])
        i, j = _on_voxels_of(m_all, m_one)
        # on the sweep's own voxels seen three times or more by the sweep alone
        j3 = j[m_one["count"][j] >= 3]
        i3 = i[m_one["count"][j] >= 3]
        together = _cc({**m_all.columns, "count": np.full(len(m_all), 3)}, t_one[j3], i3)
        alone = _cc(m_one, t_one[j3], j3)
        assert together > alone, (n, together, alone)
    unscaled = _cc(*_scored(sweeps, "merged_unscaled.nxs", list(SWEEPS)))
    assert cc_all > unscaled + 0.02, (cc_all, unscaled)  # scaling is what makes it


def _cc_half_by_shell(m, rows, edges):
    a, b = (m[f"group_{g}_intensity"][rows].astype(float) for g in (0, 1))
    s = m["s"][rows].astype(float)
    ok = np.isfinite(a) & np.isfinite(b)
    return np.array([np.corrcoef(a[ok & (s >= lo) & (s < hi)], b[ok & (s >= lo) & (s < hi)])[0, 1]
                     for lo, hi in zip(edges[:-1], edges[1:], strict=True)])  # fmt: skip


def test_cc_half_rises_with_more_sweeps(sweeps):
    """CC1/2 against resolution, on each sweep's voxels: with the other two sweeps merged in
    (more observations per voxel) it is higher in every shell than the sweep alone."""
    root = sweeps[0]
    m_all = read_table(root / "merged_all.nxs")
    for n in SWEEPS:
        m_one = read_table(root / f"merged_{n}.nxs")
        i, j = _on_voxels_of(m_all, m_one)
        s = m_one["s"][j].astype(float)
        edges = np.quantile(s[np.isfinite(s)], np.linspace(0, 1, 7))
        edges[-1] += 1e-6
        cc_all, cc_one = _cc_half_by_shell(m_all, i, edges), _cc_half_by_shell(m_one, j, edges)
        assert np.all(cc_all > cc_one), (n, cc_all, cc_one)
        assert np.all(cc_one > 0), cc_one


def test_scales_reproduce_and_merge_honours_switches(sweeps, tmp_path):
    root, dirs, _ = sweeps
    corrected = [dirs[n] / "corrected.nxs" for n in SWEEPS]
    again = [tmp_path / f"s_{n}.nxs" for n in SWEEPS]
    run_script("scale", *corrected, *DETECTOR_GRID, "--outfile", *again)
    for n, path in zip(SWEEPS, again, strict=True):
        ours, theirs = read_factors(root / f"scales_{n}.nxs"), read_factors(path)
        for kind in ours:
            np.testing.assert_array_equal(ours[kind][1], theirs[kind][1])
    scales = [root / f"scales_{n}.nxs" for n in SWEEPS]
    run_script("merge", *corrected, "--scale", *scales, "--no-scaling", "--no-detector",
               "--outfile", tmp_path / "off.nxs")  # fmt: skip
    off, unscaled = read_table(tmp_path / "off.nxs"), read_table(root / "merged_unscaled.nxs")
    np.testing.assert_array_equal(off["intensity"], unscaled["intensity"])


def test_scaling_qc_page(sweeps, tmp_path):
    """The QC page's numbers are those of the files: CC1/2 after scaling is the scaled
    merge's own; scaling raises the Friedel-pair correlation (the two halves see the
    sweeps' scales differently) and CC1/2."""
    root, dirs, _ = sweeps
    corrected = [dirs[n] / "corrected.nxs" for n in SWEEPS]
    scales = [root / f"scales_{n}.nxs" for n in SWEEPS]
    out = tmp_path / "qc"
    run_script("plot_scale_qc", *corrected, "--scale", *scales, "--geometry",
               dirs["a"] / "geometry.nxs", "--names", *SWEEPS, "-o", out)  # fmt: skip
    for fig in ("factors", "scaling_cc", "sweep_agreement"):
        check_png(out / f"{fig}.png")
    tab = qc.read_summary_tsv(out / "summary.tsv")
    merged = read_table(root / "merged_all.nxs")
    assert float(tab["CC1/2 after scaling"]) == pytest.approx(
        maps.overall_cc_half(merged), abs=1e-9
    )
    assert float(tab["CC1/2 after scaling"]) > float(tab["CC1/2 before scaling"])
    friedel = (
        float(tab["Friedel-pair CC after scaling"]),
        float(tab["Friedel-pair CC before scaling"]),
    )
    assert friedel[0] > friedel[1] + 0.05, friedel
    for j in range(len(SWEEPS)):
        assert float(tab[f"sweep {j} CC with the merged map"]) > 0.85


# -- the pieces, against independent references --------------------------------------------


def test_interpolation_matches_numpy_and_scipy():
    from scipy.interpolate import RegularGridInterpolator

    rng = np.random.default_rng(1)
    grid = scaling.control_points(np.array([3.2, 17.9]), dx=1.0)  # 3 .. 18
    x = rng.uniform(3, 18, 500)
    u = rng.normal(size=grid.size)
    np.testing.assert_allclose(scaling.interp_matrix([x], [grid]) @ u, np.interp(x, grid, u))
    gx, gy = np.linspace(0, 980, 20), np.linspace(0, 459, 10)
    pts = [rng.uniform(0, 980, 400), rng.uniform(0, 459, 400)]
    v = rng.normal(size=(20, 10))
    ours = scaling.interp_matrix(pts, [gx, gy]) @ v.ravel(order="F")  # first axis fastest
    np.testing.assert_allclose(ours, RegularGridInterpolator((gx, gy), v)(np.stack(pts, 1)))
    outside = scaling.interp_matrix([np.array([2.0, 19.0])], [grid])
    assert outside.nnz == 0  # mdx2: points off the grid get no weight


@pytest.mark.parametrize("npar", [50, 2100])  # dense and sparse accumulation
def test_normal_matrix_equals_the_sparse_product(npar):
    rng = np.random.default_rng(npar)
    n = 3000
    cols = np.sort(rng.integers(0, npar, (n, 4)), axis=1)
    vals = rng.uniform(size=(n, 4))
    w = rng.uniform(0.5, 2, n)
    A = sparse.csr_matrix((vals.ravel(), (np.repeat(np.arange(n), 4), cols.ravel())),
                          shape=(n, npar))  # fmt: skip
    want = (A.T @ sparse.diags(w) @ A).toarray()
    np.testing.assert_allclose(scaling._gram(cols, vals, w, npar).toarray(), want, atol=1e-12)
    x = rng.normal(size=n)
    np.testing.assert_allclose(scaling._project(cols, vals, x, npar), A.T @ x, atol=1e-12)


def test_singular_system_falls_back_to_least_squares():
    K = sparse.csc_matrix(np.array([[1.0, 0.0], [0.0, 0.0]]))
    x = scaling.solve(K, np.array([2.0, 0.0]))
    np.testing.assert_allclose(x, [2.0, 0.0], atol=1e-9)
