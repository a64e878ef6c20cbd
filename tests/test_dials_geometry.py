"""The geometry's ground truth from DIALS itself (../shared/data/dials-refl): every predicted
reflection of every rotation-sweep experiment maps back to its Miller index.

For each experiment, its rows of the reflection table (``id``) with a Miller index and a
prediction on the detector: ``xyzcal.px`` (x, y pixel coordinates, z the frame coordinate,
0 at the start of image_range[0]) or, where a table lacks it, ``xyzcal.mm`` (mm in the
detector plane, phi in radians). Median |hkl - miller_index| < 2e-3 and 99th percentile
< 0.05 r.l.u. are required, per experiment."""

from __future__ import annotations

import json

import numpy as np
import pytest
from realdata import DIALS_REFL, need
from refl_tables import read_reflections

from diffuseflow.errors import InputError
from diffuseflow.geometry.model import SweepGeometry
from diffuseflow.io.expt import read_expt

_TABLES = {  # folder: [(experiment file, its reflection table)]
    "centroid_test_data": [("indexed.expt", "indexed.refl")],
    "indexing_test_data": [("multi_sweep-experiments.json", "multi_sweep-indexed.pickle")],
    "l_cysteine_4_sweeps_scaled": [
        ("scaled_20_25.expt", "scaled_20_25.refl"),
        ("scaled_30.expt", "scaled_30.refl"),
    ],
    "l_cysteine_narrow_wedge": [(f"{n}_integrated.expt", f"{n}_integrated.refl") for n in (11, 23)],
    "quartz_processed": [(f"{s}.expt", f"{s}.refl") for s in ("indexed", "refined", "integrated")],
    "multi_narrow_wedges": [
        (f"sweep_{n}_experiments.json", f"sweep_{n}_reflections.pickle")
        for n in ("003", "006", "013", "031", "032")
    ],
}
PAIRS = [(f"{d}/{e}", f"{d}/{r}") for d, pairs in _TABLES.items() for e, r in pairs]

#: files that are not rotation sweeps: refused with one line saying why
REFUSED = {
    "ssx_CuNiR_test_data/indexed.expt": "rotation sweep",
    "refinement_test_data/multi_stills/multi_stills_combined.json": "rotation sweep",
    "isis_sxd_nacl_processed/imported.expt": "polychromatic",
    "refinement_test_data/dials-423/dials-423.json": "24 panels",
}


def _cases():
    for expt, refl in PAIRS:
        path = DIALS_REFL / expt
        n = len(json.loads(path.read_text())["experiment"]) if path.exists() else 1
        for k in range(n):
            yield pytest.param(expt, refl, k, id=f"{expt.split('/')[0]}/{path.stem}[{k}]")


def predicted_hkl(expt, table, k):
    """(hkl from diffuseflow's geometry, DIALS' miller_index) for experiment k's rows."""
    ids = table.get("id", np.zeros(len(table["miller_index"]), int))
    H = table["miller_index"]
    p = expt.panel
    g = SweepGeometry(expt)
    if "xyzcal.px" in table:
        x, y, z = table["xyzcal.px"].T
        on = (x >= 0) & (x <= p.image_size[0]) & (y >= 0) & (y <= p.image_size[1])
        sel = (ids == k) & np.any(H != 0, axis=1) & on
        x, y, z = x[sel], y[sel], z[sel]
        # z = 0 at the start of image_range[0]; pixel centres are at index + 0.5
        phi = g.phi_of_frame(z - (expt.scan.image_range[0] - 1))
        return g.hkl(phi, y - 0.5, x - 0.5), H[sel]
    x, y, z = table["xyzcal.mm"].T
    w, h = p.image_size[0] * p.pixel_size[0], p.image_size[1] * p.pixel_size[1]
    on = (x > 0) & (x <= w) & (y > 0) & (y <= h)  # unpredicted rows hold (0, 0, 0)
    sel = (ids == k) & np.any(H != 0, axis=1) & on
    lab = p.origin + x[sel, None] * p.fast_axis + y[sel, None] * p.slow_axis
    s1 = lab / (np.linalg.norm(lab, axis=1, keepdims=True) * expt.beam.wavelength)
    M = g.lab_to_hkl(np.degrees(z[sel]))
    return np.einsum("nij,nj->ni", M, s1 - expt.beam.s0), H[sel]


@pytest.mark.parametrize("expt_name, refl_name, k", list(_cases()))
def test_dials_predictions_map_back_to_their_miller_indices(expt_name, refl_name, k):
    expt = read_expt(need(DIALS_REFL / expt_name), k)
    table = read_reflections(need(DIALS_REFL / refl_name))
    hkl, H = predicted_hkl(expt, table, k)
    assert len(H) >= 20, "too few predicted reflections to test"
    d = np.abs(hkl - H).max(axis=1)
    median, p99 = np.median(d), np.percentile(d, 99)
    print(f"{expt_name}[{k}]: {len(d)} reflections, median {median:.2e}, p99 {p99:.2e}")
    assert median < 2e-3 and p99 < 0.05


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_files_that_are_not_rotation_sweeps_are_refused(name):
    with pytest.raises(InputError) as e:
        read_expt(need(DIALS_REFL / name))
    msg = str(e.value)
    assert "\n" not in msg and str(DIALS_REFL / name) in msg and REFUSED[name] in msg


def test_several_experiments_need_a_choice():
    path = need(DIALS_REFL / "indexing_test_data/multi_sweep-experiments.json")
    with pytest.raises(InputError) as e:
        read_expt(path)
    msg = str(e.value)
    assert "\n" not in msg and "holds 4 experiments" in msg and "experiment: N" in msg
    for k, last in enumerate((325, 325, 325, 495)):  # each listed with images and crystal
        assert f"{k}: 005_KDP_150K_0{k + 1}_#####.cbf images 1-{last} crystal 0 (I 4)" in msg
    assert "no experiment 4" in str(pytest.raises(InputError, read_expt, path, 4).value)
