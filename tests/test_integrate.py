"""integrate, correct, merge and map as library and tools: slab jobs, threads, symmetry,
interpolation, splits, bad input."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest
from conftest import run_script

from diffuseflow.algorithms import correct, merge
from diffuseflow.algorithms.importing import GeometryFile
from diffuseflow.algorithms.integrate import Accumulator, Partials
from diffuseflow.geometry.symmetry import symmetry_fields
from diffuseflow.io.tables import pack_voxel, read_table, unpack_voxels
from diffuseflow.simulate import orbit_keys


@pytest.fixture(scope="module")
def chunked(insulin_run, tmp_path_factory):
    """The insulin sweep re-imported in 5-frame chunks (6 frame-chunks: slab jobs split them)."""
    d = tmp_path_factory.mktemp("chunked")
    run_script("import_data", insulin_run / "crystal/sweep.expt", "--chunks", 5, 0, 0,
               "--outfile", d / "data.nxs")  # fmt: skip
    return d


def _integrate(insulin_run, data, out, *extra):
    run_script("integrate", insulin_run / "geometry.nxs", data, "--mask",
               insulin_run / "mask.nxs", "--subdivide", 3, 3, 3, "--max_spread", 0.25,
               "--outfile", out, *extra)  # fmt: skip
    return read_table(out)


def _same(a, b):
    assert a.columns.keys() == b.columns.keys()
    for c in a.columns:
        np.testing.assert_array_equal(a[c], b[c], err_msg=c)


def test_slab_jobs_and_threads_give_the_one_job_table(insulin_run, chunked):
    d = chunked
    one = _integrate(insulin_run, d / "data.nxs", d / "one.nxs", "--nproc", 1)
    two = _integrate(insulin_run, d / "data.nxs", d / "two.nxs", "--nproc", 2)
    _same(one, two)
    parts = []
    for k in range(4):  # 6 chunks over 4 jobs
        parts.append(d / f"part{k}.nxs")
        run_script("integrate", insulin_run / "geometry.nxs", d / "data.nxs", "--mask",
                   insulin_run / "mask.nxs", "--subdivide", 3, 3, 3, "--max_spread", 0.25,
                   "--slab", k, 4, "--outfile", parts[-1])  # fmt: skip
    gathered = _integrate(insulin_run, d / "data.nxs", d / "gathered.nxs", "--gather", *parts)
    _same(one, gathered)
    assert one["n"].max() >= 1  # passes split at 0.25 deg
    # every valid, unmasked pixel is in the table once
    import h5py

    with h5py.File(d / "data.nxs") as f, h5py.File(insulin_run / "mask.nxs") as m:
        data, mask = f["entry/image_series/data"][()], m["entry/mask/signal"][()]
    used = (data != -1) & ~mask
    assert one["pixels"].sum() == used.sum()
    assert one["counts"].sum() == data[used].sum()
    # parts out of order or missing are refused
    proc = run_script("integrate", insulin_run / "geometry.nxs", d / "data.nxs", "--gather",
                      *parts[:3], "--mask", insulin_run / "mask.nxs", "--subdivide", 3, 3, 3,
                      "--max_spread", 0.25, "--outfile", d / "bad.nxs", check=False)  # fmt: skip
    assert proc.returncode == 2 and "jobs 0..N-1" in proc.stderr and not (d / "bad.nxs").exists()


def test_accumulator_keeps_passes_apart():
    """Two partials of one voxel 0.6 deg apart: one row at max_spread 1, two at 0.5."""
    key = np.array([pack_voxel(5, -2, 7)])

    def part(phi_mean):
        return Partials(key, np.array([4]), np.array([10]), np.array([0.4]),
                        np.array([4 * phi_mean]), np.array([8.0]), np.array([12.0]))  # fmt: skip

    for spread, rows in ((1.0, 1), (0.5, 2)):
        acc = Accumulator(spread)
        acc.fold(part(10.0))
        acc.fold(part(10.6))
        t = acc.table((1, 1, 1))
        assert len(t) == rows
        np.testing.assert_array_equal(unpack_voxels(key)[0], [5, -2, 7])
        assert t["pixels"].sum() == 8 and t["counts"].sum() == 20
        if rows == 2:
            np.testing.assert_allclose(t["phi"], [10.0, 10.6], rtol=1e-6)


@pytest.mark.parametrize("group", ["I 21 3", "P 21 21 21", "P 61 2 2", "C 1 2 1", "R 3 :H"])
def test_asymmetric_unit_holds_one_member_of_every_orbit(group):
    sg = gemmi.SpaceGroup(group)
    f = symmetry_fields(sg)
    laue = correct.LaueSymmetry(f["laue_group_operators"], f["reciprocal_space_asu"])
    rng = np.random.default_rng(1)
    hkl = rng.integers(-12, 13, size=(4000, 3))
    asu, op = laue.to_asu(hkl)
    # same orbit (by gemmi's operators), and every mate of a voxel maps to the same ASU voxel
    np.testing.assert_array_equal(orbit_keys(sg, asu), orbit_keys(sg, hkl))
    for m in f["laue_group_operators"]:
        mates, _ = laue.to_asu(hkl @ np.rint(m).astype(np.int64))
        np.testing.assert_array_equal(mates, asu)
    # op names the operator used: hkl @ W_op = the ASU voxel
    ops = np.rint(f["laue_group_operators"]).astype(np.int64)
    np.testing.assert_array_equal(np.einsum("ni,nij->nj", hkl, ops[op]), asu)


def test_friedel_rules():
    hkl = np.array([[1, 2, -3], [-1, -2, 3], [2, -1, 0], [-2, 1, 0], [0, 0, -4]])
    phys, op = correct.friedel_to_asu(hkl, mdx2_compat=False)
    np.testing.assert_array_equal(phys[0], phys[1])
    np.testing.assert_array_equal(phys[2], phys[3])
    np.testing.assert_array_equal(phys[4], [0, 0, 4])
    assert set(op) == {0, 1}
    mirror, _ = correct.friedel_to_asu(hkl, mdx2_compat=True)  # mdx2: l -> |l|
    np.testing.assert_array_equal(mirror[0], [1, 2, 3])
    np.testing.assert_array_equal(mirror[1], [-1, -2, 3])


def test_nan_aware_interpolation_skips_empty_bins():
    axes = (np.arange(4.0), np.arange(5.0), np.arange(6.0))
    P, Y, X = np.meshgrid(*axes, indexing="ij")
    values = 2 * P + 3 * Y - X + 10
    holes = values.copy()
    holes[1, 2, 3] = np.nan
    pts = (np.array([0.5, 2.5, 1.0]), np.array([1.5, 3.5, 2.0]), np.array([2.5, 0.5, 3.0]))
    got, weight = correct.nan_aware_interp(axes, values, *pts)
    np.testing.assert_allclose(got, 2 * pts[0] + 3 * pts[1] - pts[2] + 10)
    near, w = correct.nan_aware_interp(axes, holes, *pts)
    # a cell with one empty corner: the mean of the others' interpolation, within their range
    corners = values[0:2, 1:3, 2:4].ravel()
    corners = corners[np.isfinite(holes[0:2, 1:3, 2:4].ravel())]
    assert corners.min() <= near[0] <= corners.max() and 0 < w[0] < 1
    assert near[1] == got[1] and w[1] == 1  # a cell without the empty bin: unchanged
    assert w[2] == 0 and np.isnan(near[2])  # on the empty bin itself: no data (dropped)
    mdx2_way = correct.mdx2_interp(axes, holes, np.array([1.2]), np.array([2.2]), np.array([3.2]))
    assert np.isnan(mdx2_way[0])  # mdx2 lets the empty bin spread


def test_random_half_is_seeded_and_balanced():
    ih = np.repeat(np.arange(500), np.random.default_rng(0).integers(1, 9, 500))
    a = merge.random_half(ih, 3)
    np.testing.assert_array_equal(a, merge.random_half(ih, 3))
    assert not np.array_equal(a, merge.random_half(ih, 4))
    n0 = np.bincount(ih[a], minlength=500)
    n1 = np.bincount(ih[~a], minlength=500)
    assert np.all(np.abs(n0 - n1) <= 1)


def test_geometry_reads_our_and_mdx2_symmetry(insulin_run):
    laue = correct.LaueSymmetry.of(GeometryFile(insulin_run / "geometry.nxs"))
    assert len(laue.operators) == 24  # m-3
    assert GeometryFile(insulin_run / "geometry.nxs").space_group().hm == "I 21 3"
