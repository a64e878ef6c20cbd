"""The .expt reader: current and legacy formats, hierarchy, goniometers, scan-varying crystals,
and one-line errors for broken files."""

import json

import numpy as np
import pytest
from realdata import legacy_scan

from diffuseflow.errors import InputError
from diffuseflow.io.expt import experiment_to_dict, read_expt
from diffuseflow.simulate import Simulation, preset


@pytest.fixture
def current_doc():
    return Simulation(preset("insulin", nx=300, ny=250, n_frames=4)).expt_dict(
        "crystal", "images/x_#####.cbf"
    )


def to_legacy(doc, tmp_path):
    """The same experiment as an older DIALS would write it: ImageSweep, legacy scan
    encoding, models in separate JSON files referenced by path, no hierarchy."""
    doc = json.loads(json.dumps(doc))
    assert "properties" in doc["scan"][0]
    legacy_scan(doc["scan"][0])
    doc["imageset"][0]["__id__"] = "ImageSweep"
    del doc["beam"][0]["__id__"]
    doc["detector"][0].pop("hierarchy")
    (tmp_path / "crystal.json").write_text(json.dumps(doc["crystal"][0]))
    doc["experiment"][0]["crystal"] = "crystal.json"
    doc["crystal"] = []
    return doc


def write(tmp_path, doc, name="x.expt"):
    p = tmp_path / name
    p.write_text(json.dumps(doc))
    return p


def test_current_and_legacy_give_the_same_experiment(tmp_path, current_doc):
    a = read_expt(write(tmp_path, current_doc, "current.expt"))
    b = read_expt(write(tmp_path, to_legacy(current_doc, tmp_path), "legacy.expt"))
    assert a.scan.phi_start == b.scan.phi_start == 160.0
    assert a.scan.phi_width == pytest.approx(b.scan.phi_width) == pytest.approx(0.1)
    np.testing.assert_allclose(a.crystal.A, b.crystal.A, atol=1e-15)
    np.testing.assert_allclose(a.panel.origin, b.panel.origin)
    np.testing.assert_array_equal(a.scan.exposure_times, b.scan.exposure_times)
    assert a.images.path_for(7) == str(tmp_path / "images" / "x_00007.cbf")
    assert a.panel.parallax and a.panel.mu > 3


def test_hierarchy_is_composed(tmp_path, current_doc):
    doc = json.loads(json.dumps(current_doc))
    flat = read_expt(write(tmp_path, doc, "flat.expt")).panel
    # move the panel into a translated, rotated group: the global frame must not change
    R = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90 deg about z
    shift = np.array([5.0, -3.0, 1.0])
    p = doc["detector"][0]["panels"][0]
    p["origin"] = (R.T @ (flat.origin - shift)).tolist()
    p["fast_axis"] = (R.T @ flat.fast_axis).tolist()
    p["slow_axis"] = (R.T @ flat.slow_axis).tolist()
    h = doc["detector"][0]["hierarchy"]
    h.update(fast_axis=R[:, 0].tolist(), slow_axis=R[:, 1].tolist(), origin=shift.tolist())
    moved = read_expt(write(tmp_path, doc, "tree.expt")).panel
    np.testing.assert_allclose(moved.origin, flat.origin, atol=1e-12)
    np.testing.assert_allclose(moved.fast_axis, flat.fast_axis, atol=1e-12)


def test_multi_axis_goniometer_equals_fixed_and_setting(tmp_path, current_doc):
    from diffuseflow.geometry.model import rotation_matrices

    doc = json.loads(json.dumps(current_doc))
    axes = [[1.0, 0.0, 0.0], [0.0, 0.64, 0.77], [1.0, 0.0, 0.0]]
    angles = [10.0, 30.0, 0.0]
    doc["goniometer"] = [
        {"axes": axes, "angles": angles, "names": ["PHI", "KAPPA", "OMEGA"], "scan_axis": 2}
    ]
    g = read_expt(write(tmp_path, doc)).goniometer
    F = rotation_matrices(np.array(axes[1]), 30.0) @ rotation_matrices(np.array(axes[0]), 10.0)
    np.testing.assert_allclose(g.fixed_rotation, F, atol=1e-12)
    np.testing.assert_allclose(g.setting_rotation, np.eye(3), atol=1e-12)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["beam"][0].pop("wavelength"), "beam is missing key 'wavelength'"),
        (lambda d: d["detector"][0]["panels"][0].pop("origin"), "missing key 'origin'"),
        (lambda d: d["scan"][0].pop("image_range"), "scan is missing key 'image_range'"),
        (lambda d: d["crystal"][0].pop("real_space_b"), "missing key 'real_space_b'"),
        (
            lambda d: d["detector"][0]["panels"].append(d["detector"][0]["panels"][0]),
            "2 panels; only single-panel",
        ),
        (lambda d: d.update(__id__="Nope"), "not a DIALS experiment list"),
        (lambda d: d["experiment"][0].update(beam=3), "beam index 3 does not exist"),
    ],
)
def test_broken_expt_gives_one_line_error_naming_file(tmp_path, current_doc, mutate, message):
    doc = json.loads(json.dumps(current_doc))
    mutate(doc)
    path = write(tmp_path, doc, "broken.expt")
    with pytest.raises(InputError) as e:
        read_expt(path)
    assert message in str(e.value) and str(path) in str(e.value)
    assert "\n" not in str(e.value)


def test_not_json(tmp_path):
    p = tmp_path / "bad.expt"
    p.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        read_expt(p)


def test_roundtrip_through_experiment_to_dict(tmp_path, current_doc):
    a = read_expt(write(tmp_path, current_doc))
    b = read_expt(write(tmp_path, experiment_to_dict(a), "rt.expt"))
    np.testing.assert_allclose(a.crystal.A, b.crystal.A, rtol=1e-12, atol=1e-17)
    np.testing.assert_array_equal(a.panel.origin, b.panel.origin)
    assert a.images.template == b.images.template
    assert a.panel.mask_rectangles == b.panel.mask_rectangles
