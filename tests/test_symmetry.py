"""Space groups as DIALS writes them: any Hall symbol, including change-of-basis settings, with
absences, Laue operators and the asymmetric unit in that setting."""

from __future__ import annotations

import gemmi
import h5py
import numpy as np
import pytest
from conftest import run_script
from realdata import DIALS_REFL, need
from refl_tables import read_reflections

from diffuseflow.geometry.symmetry import is_allowed, space_group_from_hall, symmetry_fields

#: change-of-basis settings (the first as in real DIALS files here) and non-reference ones
SETTINGS = [
    " I 2 2 3 (y+z,x+z,x+y)",
    " F 4 2 3 (y+z,x+z,x+y)",
    " P 61 2 (x,y,z+5/12)",
    " C 2y (x-z,y,z)",
    " P 2yb (x,y,-x+z)",
    " R 3 (-y+z,x+z,-x+y+z)",
    " P 4 2 (x+y,-x+y,z)",
]
GRID = np.stack(np.meshgrid(*[np.arange(-5, 6)] * 3, indexing="ij"), -1).reshape(-1, 3)


def check_setting(hall: str):
    """The ASU holds exactly one member of every Laue orbit; absences equal the reference
    group's on the transformed indices."""
    sym = space_group_from_hall(hall)
    fields = symmetry_fields(sym)
    ops = fields["laue_group_operators"]
    condition = fields["reciprocal_space_asu"]

    def in_asu(hkl):
        h, k, l = hkl.T  # noqa: E741 - the names the numexpr string uses
        return eval(condition, {}, {"h": h, "k": k, "l": l})  # noqa: S307 - our own string

    for x in GRID[1::5]:
        orbit = np.unique(np.rint(np.einsum("j,wjk->wk", x, ops)).astype(int), axis=0)
        assert in_asu(orbit).sum() == 1, (hall, x)
    ref = GRID @ sym.to_reference
    integral = np.all(np.abs(ref - np.rint(ref)) < 1e-9, axis=1)
    ref_allowed = np.zeros(len(GRID), bool)
    ref_allowed[integral] = is_allowed(sym.reference, np.rint(ref[integral]).astype(int))
    np.testing.assert_array_equal(is_allowed(sym, GRID), ref_allowed)
    return sym


@pytest.mark.parametrize("hall", SETTINGS)
def test_change_of_basis_settings(hall):
    check_setting(hall)


def test_every_tabulated_setting():
    for sg in list(gemmi.spacegroup_table())[::3]:
        sym = check_setting(" " + sg.hall)
        # a few settings share their operations (A c a a = A b a a): gemmi names the first
        assert sym.hm == gemmi.find_spacegroup_by_ops(sg.operations()).hm
        assert sym.number == sg.number


def test_primitive_setting_of_a_centred_cubic_group():
    sym = space_group_from_hall(" I 2 2 3 (y+z,x+z,x+y)")
    assert sym.hm == "I 2 3 (y+z,x+z,x+y)" and sym.number == 197
    assert sym.centring == "P" and is_allowed(sym, GRID).all()  # no centring absences left
    f = symmetry_fields(sym)
    assert f["laue_group_number"] == 200 and f["reflection_conditions"] == "True"
    assert f["space_group_operators"].shape == (12, 3, 4)  # primitive cell: no centring ops


def test_unparseable_hall_symbol_is_one_line():
    from diffuseflow.errors import InputError

    with pytest.raises(InputError, match="cannot parse Hall symbol"):
        space_group_from_hall(" Q 9 9", "x.expt")


def test_real_dials_file_in_a_change_of_basis_setting(tmp_path):
    """multi_narrow_wedges (DLS I04, I 2 3 indexed on its primitive cell): geometry.nxs is
    written, and DIALS' own indices, taken to the reference I-centred setting, obey the
    centring condition there (h + k + l even): the change of basis is the right one."""
    expt = need(DIALS_REFL / "multi_narrow_wedges/sweep_003_experiments.json")
    out = tmp_path / "geometry.nxs"
    run_script("import_geometry", expt, "--experiment", 0, "--outfile", out)
    with h5py.File(out) as f:
        assert f["entry/crystal/space_group"][()].decode() == "I 2 3 (y+z,x+z,x+y)"
        assert f["entry/symmetry/space_group_number"][()] == 197
    sym = space_group_from_hall(" I 2 2 3 (y+z,x+z,x+y)")
    table = read_reflections(DIALS_REFL / "multi_narrow_wedges/sweep_003_reflections.pickle")
    H = table["miller_index"][np.any(table["miller_index"] != 0, axis=1)]
    ref = np.rint(H @ sym.to_reference).astype(int)
    assert len(H) > 400 and np.all(ref.sum(axis=1) % 2 == 0)
