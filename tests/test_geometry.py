"""Pixel -> Miller index geometry against DIALS' own numbers and an independent predictor."""

import json

import numpy as np
import pytest

from diffuseflow.geometry.model import SweepGeometry, rotation_matrices
from diffuseflow.io.expt import read_expt
from diffuseflow.simulate import Simulation, preset

# expt-geometry.md §5: the minimal .expt and DIALS PixelToMillerIndex reference values
MINIMAL = {
    "__id__": "ExperimentList",
    "experiment": [
        {
            "__id__": "Experiment",
            "identifier": "",
            "beam": 0,
            "detector": 0,
            "goniometer": 0,
            "scan": 0,
            "crystal": 0,
            "imageset": 0,
        }
    ],
    "imageset": [{"__id__": "ImageSequence", "template": "images/example_####.cbf"}],
    "beam": [{"direction": [0.0, 0.0, 1.0], "wavelength": 0.9795}],
    "detector": [
        {
            "panels": [
                {
                    "name": "Panel",
                    "type": "SENSOR_PAD",
                    "fast_axis": [1.0, 0.0, 0.0],
                    "slow_axis": [0.0, -1.0, 0.0],
                    "origin": [-211.818, 217.322, -200.0],
                    "pixel_size": [0.172, 0.172],
                    "image_size": [2463, 2527],
                    "trusted_range": [-1.0, 1048574.0],
                    "thickness": 0.32,
                    "material": "Si",
                    "mu": 3.9604,
                    "px_mm_strategy": {"type": "ParallaxCorrectedPxMmStrategy"},
                }
            ]
        }
    ],
    "goniometer": [
        {
            "rotation_axis": [1.0, 0.0, 0.0],
            "fixed_rotation": [1, 0, 0, 0, 1, 0, 0, 0, 1],
            "setting_rotation": [1, 0, 0, 0, 1, 0, 0, 0, 1],
        }
    ],
    "scan": [
        {
            "image_range": [1, 4],
            "oscillation": [10.0, 0.5],
            "exposure_time": [0.1] * 4,
            "epochs": [0.0, 0.1, 0.2, 0.3],
        }
    ],
    "crystal": [
        {
            "__id__": "crystal",
            "real_space_a": [40.0, 0.0, 0.0],
            "real_space_b": [0.0, 50.0, 0.0],
            "real_space_c": [0.0, 0.0, 60.0],
            "space_group_hall_symbol": " P 2ac 2ab",
        }
    ],
}


@pytest.mark.parametrize(
    "x, y, z, hkl",
    [
        (1500.5, 1000.5, 0.5, (8.9848, 11.2459, 0.5798)),
        (300.5, 2400.5, 3.5, (-20.2849, -26.3747, 30.3153)),
    ],
)
def test_dials_reference_values(tmp_path, x, y, z, hkl):
    p = tmp_path / "minimal.expt"
    p.write_text(json.dumps(MINIMAL))
    g = SweepGeometry(read_expt(p))
    # continuous pixel (x, y) = index + 0.5 in the physical convention
    phi = g.phi_of_frame(z)
    got = g.hkl(phi, y - 0.5, x - 0.5)
    np.testing.assert_allclose(got, hkl, atol=6e-5)  # reference printed to 4 decimals


def predict(geom, H):
    """Independent forward prediction of reflection H: rotation angles where it meets the
    Ewald sphere, then ray-plane intersection -> continuous pixel (x, y). No parallax."""
    S, F = geom.gonio.setting_rotation, geom.gonio.fixed_rotation
    e = geom.gonio.rotation_axis
    r0 = F @ geom.crystal.A @ H
    s0 = geom.s0
    # |S R(phi) r0 + s0|^2 = |s0|^2  <=>  2 (R r0).(S^T s0) = -|r0|^2 ; solve on a fine grid
    phis = np.linspace(0, 360, 72001)
    Rs = rotation_matrices(e, phis)
    f = 2 * (Rs @ r0) @ (S.T @ s0) + r0 @ r0
    roots = np.nonzero(np.sign(f[:-1]) != np.sign(f[1:]))[0]
    out = []
    p = geom.panel
    n = np.cross(p.fast_axis, p.slow_axis)
    for i in roots:
        a, b = phis[i], phis[i + 1]
        for _ in range(60):  # bisection to machine precision
            m = 0.5 * (a + b)
            fm = 2 * (rotation_matrices(e, m) @ r0) @ (S.T @ s0) + r0 @ r0
            fa = 2 * (rotation_matrices(e, a) @ r0) @ (S.T @ s0) + r0 @ r0
            a, b = (m, b) if np.sign(fm) == np.sign(fa) else (a, m)
        phi = 0.5 * (a + b)
        s1 = S @ rotation_matrices(e, phi) @ r0 + s0
        t = (p.origin @ n) / (s1 @ n)
        if t <= 0:
            continue
        v = t * s1 - p.origin
        x, y = v @ p.fast_axis / p.pixel_size[0], v @ p.slow_axis / p.pixel_size[1]
        if 0 <= x < p.image_size[0] and 0 <= y < p.image_size[1]:
            out.append((phi, x, y))
    return out


@pytest.mark.parametrize("name", ["insulin", "p212121"])
def test_hkl_at_predicted_spot_centres(tmp_path, name):
    sim = Simulation(preset(name, nx=800, ny=700, n_frames=3600, osc=0.1))
    doc = sim.expt_dict("crystal", "img_#####.cbf")
    doc["detector"][0]["panels"][0]["px_mm_strategy"] = {"type": "SimplePxMmStrategy"}
    path = tmp_path / "s.expt"
    path.write_text(json.dumps(doc))
    geom = SweepGeometry(read_expt(path))
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(40):
        H = rng.integers(-8, 9, 3).astype(float)
        for phi, x, y in predict(geom, H):
            got = geom.hkl(phi, y - 0.5, x - 0.5)
            np.testing.assert_allclose(got, H, atol=1e-6)
            checked += 1
    assert checked >= 10


def test_mdx2_corner_convention_differs_by_half_a_pixel(tmp_path):
    p = tmp_path / "minimal.expt"
    p.write_text(json.dumps(MINIMAL))
    e = read_expt(p)
    centre, corner = SweepGeometry(e), SweepGeometry(e, mdx2_compat=True)
    np.testing.assert_allclose(
        corner.hkl(10.25, 1000.5, 1500.5), centre.hkl(10.25, 1000.0, 1500.0), atol=1e-12
    )


def test_scan_varying_crystal_interpolates(tmp_path):
    doc = json.loads(json.dumps(MINIMAL))
    A = np.linalg.inv(np.diag([40.0, 50.0, 60.0]))
    Rz = rotation_matrices(np.array([0.0, 0.0, 1.0]), 0.2)
    doc["crystal"][0]["A_at_scan_points"] = [
        (np.linalg.matrix_power(Rz, k) @ A).ravel().tolist() for k in range(5)
    ]
    p = tmp_path / "sv.expt"
    p.write_text(json.dumps(doc))
    e = read_expt(p)
    for compat in (False, True):
        g = SweepGeometry(e, mdx2_compat=compat)
        # at a scan point the setting matrix is exactly that scan point's
        np.testing.assert_allclose(g.setting_matrix(g.phi_of_frame(2.0)), Rz @ Rz @ A, atol=1e-12)
    mid_linear = SweepGeometry(e).setting_matrix(g.phi_of_frame(1.5))
    mid_rot = SweepGeometry(e, mdx2_compat=True).setting_matrix(g.phi_of_frame(1.5))
    half = rotation_matrices(np.array([0.0, 0.0, 1.0]), 0.3) @ A
    np.testing.assert_allclose(mid_rot, half, atol=1e-12)  # mdx2: rotation interpolation
    assert np.abs(mid_linear - half).max() < 1e-6  # DIALS: linear in A, close for small steps


@pytest.mark.parametrize("name", ["insulin", "p212121"])
@pytest.mark.parametrize("parallax", [True, False])
@pytest.mark.parametrize("mdx2_compat", [False, True])
def test_scattering_vector_image_is_the_per_pixel_expression(tmp_path, name, parallax,
                                                             mdx2_compat):  # fmt: skip
    """The compiled whole-panel pass gives scattering_vector's numpy values bit for bit (every
    kernel that reads the planes depends on that), with and without parallax, both pixel
    conventions, on a tilted panel (p212121) and a flat one."""
    sim = Simulation(preset(name, nx=613, ny=401, n_frames=2))
    doc = sim.expt_dict("crystal", "img_#####.cbf")
    if not parallax:
        doc["detector"][0]["panels"][0]["px_mm_strategy"] = {"type": "SimplePxMmStrategy"}
    path = tmp_path / "s.expt"
    path.write_text(json.dumps(doc))
    geom = SweepGeometry(read_expt(path), mdx2_compat=mdx2_compat)
    assert geom.panel.parallax == parallax
    planes = geom.scattering_vector_image()
    ny, nx = geom.shape
    expected = geom.scattering_vector(np.arange(ny)[:, None], np.arange(nx)[None, :])
    np.testing.assert_array_equal(planes, np.moveaxis(expected, -1, 0))
