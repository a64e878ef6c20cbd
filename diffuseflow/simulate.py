"""Simulated rotation sweeps with known truth: the demo data and the tests' fixtures.

A crystal sweep and a crystal-free background sweep, written as DIALS experiment lists (current
format: ImageSequence, relative template, scan ``properties``) plus images, with the truth
beside them (``truth.json``) so that every later step can be scored:

* Bragg peaks: a 3-D Gaussian in fractional Miller index, offset r0 and covariance ``cov``,
  scaled by a random intensity per reflection (absent reflections, by gemmi, have none).
  Counts are the Gaussian point-sampled at the pixel centre and the frame-centre angle, so the
  truth of "expected Bragg photons per pixel" is exact: :meth:`Simulation.bragg_expected`.
* Air scatter falling with angle (both sweeps; :meth:`background_rate`), which the background
  sweep measures.
* Diffuse scattering (crystal sweep), the truth a map is scored on: an intensity D(hkl)
  (:meth:`diffuse_intensity`, in mdx2's units: count rate / (solid angle x polarisation x
  efficiency x attenuation)) made of an isotropic halo and solvent ring, a smooth anisotropic
  term, and halos around the allowed Bragg positions whose width differs along and across the
  scattering vector and whose strength varies with direction; every term is invariant under
  the crystal's Laue group. Counts = D(hkl at the pixel centre and frame-centre angle) x the
  pixel's exact correction factors (those import_geometry writes) x exposure.
* Scaling truth (mdx2's scale model, for ``scale`` to recover): the crystal's scattering (Bragg
  and diffuse) is multiplied by b(phi) (an overall scale per sweep times a drift of the
  illuminated volume: linear plus a sine in phi), a(x, y, phi) (an absorption-like term) and
  d(x, y) (the detector's response, which multiplies the air scatter of both sweeps too, so the
  background sweep measures d times the air). :meth:`Simulation.beam_scale`,
  :meth:`Simulation.detector_response` and :meth:`Simulation.absorption` are the truth; all are
  1 by default. ``crystal_rotation_deg`` turns the crystal, so several sweeps of one crystal
  form see reciprocal space from different orientations (a multi-sweep data set).
* Poisson noise, a few zingers, Pilatus/Eiger module gaps and a beamstop written as -1; the
  background sweep may carry a small bright "salt" spot that ``valid_range`` must remove.

The crystal and background sweeps differ as in the mdx2 insulin tutorial: 0.1 s per 0.1 deg
against 1 s per 1 deg.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import gemmi
import numpy as np
from numba import njit, prange

from diffuseflow.geometry.kernels import bragg_image
from diffuseflow.geometry.model import SweepGeometry, air_attenuation_per_mm
from diffuseflow.geometry.symmetry import allowed_table, index_limit, symmetry_fields
from diffuseflow.io.expt import read_expt
from diffuseflow.io.tables import pack_voxels
from diffuseflow.io.writers import pilatus_header, write_cbf, write_eiger, write_smv

#: insulin tutorial orientation (mdx2-compat.md §8.1), orthonormalised below
_INSULIN_U = [[-0.8086, -0.1125, 0.5775], [-0.5884, 0.1495, -0.7946], [0.0031, -0.9823, -0.1871]]
#: insulin tutorial principal axes of the peak ellipsoid (§8.3)
_INSULIN_AXES = [
    [-0.651304, 0.114611, -0.750111],
    [-0.756288, -0.178675, 0.629367],
    [0.061894, -0.97721, -0.203051],
]


@dataclass
class Preset:
    name: str
    space_group: str
    cell: tuple
    U: list
    wavelength: float
    distance: float  #: mm
    pixel: float  #: mm
    nx: int  #: fast
    ny: int  #: slow
    beam_centre: tuple  #: (fast, slow) in units of the detector size (0.5 = middle)
    module: tuple  #: (fast, slow) module size in pixels
    gap: tuple  #: (fast, slow) gap size in pixels
    rotation_axis: tuple
    setting_rotation_deg: tuple  #: (axis x, y, z, angle) applied as S
    detector_tilt_deg: float  #: rotation of the panel about the lab y axis
    n_frames: int
    osc: float  #: degrees per frame
    phi_start: float
    exposure: float  #: seconds per frame
    bkg_frames: int
    bkg_osc: float
    bkg_exposure: float
    r0: tuple
    semi_axes: tuple  #: sqrt(eig(cov)), r.l.u.
    axes: list  #: principal axes (rows)
    peak_scale: float  #: mean peak height (photons) at zero resolution
    b_factor: float
    air_rate: float  #: counts/s/pixel of air scatter at 2theta = 0
    air_falloff_deg: float
    halo_rate: float  #: counts/s/pixel at the diffuse halo maximum
    halo_s: float  #: 1/Angstrom
    halo_width: float
    ring_rate: float
    ring_s: float
    ring_width: float
    zingers_per_frame: int
    beamstop_radius: float  #: pixels
    salt_rate: float  #: counts/s of the stray bright spot in the background sweep (0 = none)
    #: anisotropic diffuse signal (crystal sweep), rates in counts/s at the normal pixel:
    #: a smooth envelope in s times a Laue-symmetrised direction factor ...
    aniso_rate: float = 6.0
    aniso_s: float = 0.22  #: 1/Angstrom, envelope width
    aniso_axis: tuple = (1.0, 2.0, 3.0)  #: direction u in the crystal's Cartesian frame
    #: ... and halos around the allowed Bragg positions, wider across than along the
    #: scattering vector (widths in units of the largest reciprocal axis), strength peaking at
    #: s = bragg_halo_s and varying with the reflection's direction
    bragg_halo_rate: float = 8.0
    bragg_halo_s: float = 0.25
    bragg_halo_radial: float = 0.3
    bragg_halo_tangential: float = 0.45
    bragg_halo_anisotropy: float = 0.8
    #: scaling truth: b(phi) = overall_scale (1 + drift[0] (phi - phi_start)
    #: + drift[1] sin(2 pi (phi - phi_start) / drift[2])), phi in degrees
    overall_scale: float = 1.0
    drift: tuple = (0.0, 0.0, 10.0)
    #: d(x, y) = 1 + detector_response cos(2 pi (1.2 x / nx + 0.35)) cos(2 pi (0.8 y / ny))
    detector_response: float = 0.0
    #: a(x, y, phi) = 1 + absorption (x / nx - 0.5) cos(2 pi (phi - phi_start) / 40)
    absorption: float = 0.0
    #: a further rotation of the crystal (lab axis x, y, z and angle in degrees)
    crystal_rotation_deg: tuple = (0.0, 0.0, 1.0, 0.0)
    image_format: str = "cbf"
    compress: str | None = None
    seed: int = 1
    extra: dict = field(default_factory=dict)


PRESETS = {
    "insulin": Preset(
        name="insulin",
        space_group="I 21 3",
        cell=(79.52, 79.52, 79.52, 90.0, 90.0, 90.0),
        U=_INSULIN_U,
        wavelength=0.9768,
        distance=260.0,
        pixel=0.172,
        nx=2463,
        ny=2527,
        beam_centre=(1264.48 / 2463, 1242.52 / 2527),
        module=(487, 195),
        gap=(7, 17),
        rotation_axis=(-1.0, 0.0, 0.0),
        setting_rotation_deg=(0.0, 0.0, 1.0, 0.0),
        detector_tilt_deg=0.0,
        n_frames=500,
        osc=0.1,
        phi_start=160.0,
        exposure=0.1,
        bkg_frames=50,
        bkg_osc=1.0,
        bkg_exposure=1.0,
        r0=(0.03, 0.002, 0.007),
        semi_axes=(0.028, 0.024, 0.016),
        axes=_INSULIN_AXES,
        peak_scale=600.0,
        b_factor=20.0,
        air_rate=18.0,
        air_falloff_deg=25.0,
        halo_rate=8.0,
        halo_s=0.18,
        halo_width=0.08,
        ring_rate=10.0,
        ring_s=1 / 3.3,
        ring_width=0.02,
        zingers_per_frame=3,
        beamstop_radius=50.0,
        salt_rate=2000.0,
    ),
    "p212121": Preset(
        name="p212121",
        space_group="P 21 21 21",
        cell=(41.3, 55.7, 71.9, 90.0, 90.0, 90.0),
        U=[[0.36, 0.48, 0.8], [0.8, -0.6, 0.0], [0.48, 0.64, -0.6]],
        wavelength=1.0332,
        distance=150.0,
        pixel=0.075,
        nx=3108,
        ny=3262,
        beam_centre=(0.46, 0.53),
        module=(1030, 514),
        gap=(10, 37),
        rotation_axis=(1.0, 0.0, 0.0),
        setting_rotation_deg=(0.0, 0.0, 1.0, 4.0),
        detector_tilt_deg=3.0,
        n_frames=360,
        osc=0.25,
        phi_start=0.0,
        exposure=0.05,
        bkg_frames=36,
        bkg_osc=2.5,
        bkg_exposure=0.5,
        r0=(-0.01, 0.02, 0.0),
        semi_axes=(0.035, 0.025, 0.02),
        axes=[[0.0, 0.6, 0.8], [1.0, 0.0, 0.0], [0.0, 0.8, -0.6]],
        peak_scale=400.0,
        b_factor=15.0,
        air_rate=30.0,
        air_falloff_deg=30.0,
        halo_rate=12.0,
        halo_s=0.2,
        halo_width=0.1,
        ring_rate=15.0,
        ring_s=1 / 3.2,
        ring_width=0.025,
        zingers_per_frame=3,
        beamstop_radius=40.0,
        salt_rate=1500.0,
        image_format="cbf",
    ),
}


def preset(name: str, **overrides) -> Preset:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def _rot(axis, deg):
    from diffuseflow.geometry.model import rotation_matrices

    return rotation_matrices(np.asarray(axis, float), deg)


def _orthonormal(U):
    u, _, vt = np.linalg.svd(np.asarray(U, float))
    R = u @ vt
    return R if np.linalg.det(R) > 0 else -R


def gap_rectangles(p: Preset) -> list[list[int]]:
    """Module gaps as DIALS panel mask rectangles [x0, y0, x1, y1] (end exclusive)."""
    rects = []
    mf, ms = p.module
    gf, gs = p.gap
    x = mf
    while x < p.nx:
        rects.append([x, 0, min(x + gf, p.nx), p.ny])
        x += mf + gf
    y = ms
    while y < p.ny:
        rects.append([0, y, p.nx, min(y + gs, p.ny)])
        y += ms + gs
    return rects


@njit(cache=True, inline="always")
def _direction_factor(x, y, z, V):
    """mean over the Laue-related unit vectors v of (q.v)^4 for a unit vector q: in [0, 1]."""
    acc = 0.0
    for g in range(V.shape[0]):
        c = x * V[g, 0] + y * V[g, 1] + z * V[g, 2]
        c2 = c * c
        acc += c2 * c2
    return acc / V.shape[0]


@njit(parallel=True, cache=True)
def _diffuse_kernel(hkl, B, iso, aniso, V, halo, allowed, hmax, out):
    """D(hkl) of every row of hkl (n, 3); parameters as packed by Simulation._diffuse_args."""
    halo_amp, halo_s, halo_w, ring_amp, ring_s, ring_w = iso
    an_amp, an_s = aniso
    bh_amp, bh_s, wr, wt, beta = halo
    for e in prange(hkl.shape[0]):
        h, k, l = hkl[e, 0], hkl[e, 1], hkl[e, 2]  # noqa: E741
        qx = B[0, 0] * h + B[0, 1] * k + B[0, 2] * l
        qy = B[1, 0] * h + B[1, 1] * k + B[1, 2] * l
        qz = B[2, 0] * h + B[2, 1] * k + B[2, 2] * l
        s = np.sqrt(qx * qx + qy * qy + qz * qz)
        d = halo_amp * np.exp(-0.5 * ((s - halo_s) / halo_w) ** 2)
        d += ring_amp * np.exp(-0.5 * ((s - ring_s) / ring_w) ** 2)
        if s > 0:
            x = s / an_s
            d += (
                an_amp * x * x * np.exp(-0.5 * x * x) * _direction_factor(qx / s, qy / s, qz / s, V)
            )
        H0 = int(np.rint(h))
        K0 = int(np.rint(k))
        L0 = int(np.rint(l))
        for dh in range(-1, 2):
            for dk in range(-1, 2):
                for dl in range(-1, 2):
                    H, K, L = H0 + dh, K0 + dk, L0 + dl
                    if abs(H) > hmax or abs(K) > hmax or abs(L) > hmax:
                        continue
                    if (H == 0 and K == 0 and L == 0) or not allowed[H + hmax, K + hmax, L + hmax]:
                        continue
                    gx = B[0, 0] * H + B[0, 1] * K + B[0, 2] * L
                    gy = B[1, 0] * H + B[1, 1] * K + B[1, 2] * L
                    gz = B[2, 0] * H + B[2, 1] * K + B[2, 2] * L
                    sg = np.sqrt(gx * gx + gy * gy + gz * gz)
                    ux, uy, uz = gx / sg, gy / sg, gz / sg
                    dx, dy, dz = qx - gx, qy - gy, qz - gz
                    r = dx * ux + dy * uy + dz * uz
                    t2 = dx * dx + dy * dy + dz * dz - r * r
                    d2 = r * r / (wr * wr) + t2 / (wt * wt)
                    if d2 < 36.0:
                        xg = (sg / bh_s) ** 2
                        amp = bh_amp * xg * np.exp(1.0 - xg)
                        amp *= 1.0 + beta * _direction_factor(ux, uy, uz, V)
                        d += amp * np.exp(-0.5 * d2)
        out[e] = d


class Simulation:
    """A simulated experiment: geometry, truth and image synthesis for both sweeps."""

    def __init__(self, p: Preset):
        self.p = p
        sg = gemmi.SpaceGroup(p.space_group)
        self.space_group = sg
        B = np.array(gemmi.UnitCell(*p.cell).frac.mat.tolist()).T
        turn = _rot(p.crystal_rotation_deg[:3], p.crystal_rotation_deg[3])
        self.A = turn @ _orthonormal(p.U) @ B
        axes = np.asarray(p.axes, float)
        axes /= np.linalg.norm(axes, axis=1, keepdims=True)
        axes = _orthonormal(axes)  # rows: principal axes
        self.cov = axes.T @ np.diag(np.square(p.semi_axes)) @ axes
        self.r0 = np.asarray(p.r0, float)

    # -- experiment models -----------------------------------------------------------------

    def panel_frame(self):
        p = self.p
        tilt = _rot((0, 1, 0), p.detector_tilt_deg)
        fast = tilt @ np.array([1.0, 0.0, 0.0])
        slow = tilt @ np.array([0.0, -1.0, 0.0])
        bx, by = p.beam_centre[0] * p.nx * p.pixel, p.beam_centre[1] * p.ny * p.pixel
        # the beam (along -z) meets the panel at the beam centre, `distance` from the sample
        hit = np.array([0.0, 0.0, -p.distance])
        origin = hit - bx * fast - by * slow
        return origin, fast, slow

    def expt_dict(self, kind: str, template: str) -> dict:
        """A current-format DIALS ExperimentList for the crystal or background sweep."""
        p = self.p
        crystal = kind == "crystal"
        n = p.n_frames if crystal else p.bkg_frames
        osc = p.osc if crystal else p.bkg_osc
        expo = p.exposure if crystal else p.bkg_exposure
        origin, fast, slow = self.panel_frame()
        import xraydb

        mu_si = float(xraydb.material_mu("Si", 12398.419843320026 / p.wavelength)) / 10
        S = _rot(p.setting_rotation_deg[:3], p.setting_rotation_deg[3])
        single = p.image_format == "h5"
        iset = {
            "__id__": "ImageSequence",
            "template": template,
            "mask": None,
            "gain": None,
            "pedestal": None,
            "dx": None,
            "dy": None,
            "params": {},
        }
        if single:
            iset["single_file_indices"] = list(range(n))
        doc = {
            "__id__": "ExperimentList",
            "experiment": [
                {
                    "__id__": "Experiment",
                    "identifier": f"diffuseflow-sim-{p.name}-{kind}",
                    "beam": 0,
                    "detector": 0,
                    "goniometer": 0,
                    "scan": 0,
                    "imageset": 0,
                    **({"crystal": 0} if crystal else {}),
                }
            ],
            "imageset": [iset],
            "beam": [
                {
                    "__id__": "monochromatic",
                    "direction": [0.0, 0.0, 1.0],
                    "wavelength": p.wavelength,
                    "divergence": 0.0,
                    "sigma_divergence": 0.0,
                    "polarization_normal": [0.0, 1.0, 0.0],
                    "polarization_fraction": 0.999,
                    "flux": 0.0,
                    "transmission": 1.0,
                    "probe": "x-ray",
                    "sample_to_source_distance": 0.0,
                }
            ],
            "detector": [
                {
                    "panels": [
                        {
                            "name": "Panel",
                            "type": "SENSOR_PAD",
                            "fast_axis": fast.tolist(),
                            "slow_axis": slow.tolist(),
                            "origin": origin.tolist(),
                            "raw_image_offset": [0, 0],
                            "image_size": [p.nx, p.ny],
                            "pixel_size": [p.pixel, p.pixel],
                            "trusted_range": [0.0, 1048573.0],
                            "thickness": 0.32,
                            "material": "Si",
                            "mu": mu_si,
                            "identifier": "",
                            "mask": gap_rectangles(p),
                            "gain": 1.0,
                            "pedestal": 0.0,
                            "px_mm_strategy": {"type": "ParallaxCorrectedPxMmStrategy"},
                        }
                    ],
                    "hierarchy": {
                        "name": "",
                        "type": "",
                        "fast_axis": [1.0, 0.0, 0.0],
                        "slow_axis": [0.0, 1.0, 0.0],
                        "origin": [0.0, 0.0, 0.0],
                        "raw_image_offset": [0, 0],
                        "image_size": [0, 0],
                        "pixel_size": [0.0, 0.0],
                        "trusted_range": [0.0, 0.0],
                        "thickness": 0.0,
                        "material": "",
                        "mu": 0.0,
                        "identifier": "",
                        "mask": [],
                        "gain": 1.0,
                        "pedestal": 0.0,
                        "px_mm_strategy": {"type": "SimplePxMmStrategy"},
                        "children": [{"panel": 0}],
                    },
                }
            ],
            "goniometer": [
                {
                    "rotation_axis": list(p.rotation_axis),
                    "fixed_rotation": np.eye(3).ravel().tolist(),
                    "setting_rotation": S.ravel().tolist(),
                }
            ],
            "scan": [
                {
                    "image_range": [1, n],
                    "batch_offset": 0,
                    "properties": {
                        "oscillation": (p.phi_start + osc * np.arange(n)).tolist(),
                        "exposure_time": [expo] * n,
                        "epochs": (expo * np.arange(n)).tolist(),
                        # a one-image scan's width cannot come from its angles
                        **({"oscillation_width": [osc]} if n == 1 else {}),
                    },
                    "valid_image_ranges": {},
                }
            ],
            "crystal": [],
            "profile": [],
            "scaling_model": [],
        }
        if crystal:
            M = np.linalg.inv(self.A)
            doc["crystal"] = [
                {
                    "__id__": "crystal",
                    "real_space_a": M[0].tolist(),
                    "real_space_b": M[1].tolist(),
                    "real_space_c": M[2].tolist(),
                    "space_group_hall_symbol": " " + self.space_group.hall,
                }
            ]
        return doc

    # -- truth --------------------------------------------------------------------------------

    def invalid_mask(self) -> np.ndarray:
        """Module gaps and the beamstop (disc + arm to the top edge): -1 in the images."""
        p = self.p
        m = np.zeros((p.ny, p.nx), bool)
        for x0, y0, x1, y1 in gap_rectangles(p):
            m[y0:y1, x0:x1] = True
        cx, cy = p.beam_centre[0] * p.nx, p.beam_centre[1] * p.ny
        iy, ix = np.ogrid[: p.ny, : p.nx]
        m |= (ix + 0.5 - cx) ** 2 + (iy + 0.5 - cy) ** 2 <= p.beamstop_radius**2
        half = max(2, int(p.beamstop_radius * 0.3))
        m[: int(cy), max(int(cx) - half, 0) : int(cx) + half] = True
        return m

    def intensity_table(self, hmax: int) -> np.ndarray:
        """Peak heights (photons) of every reflection; 0 where systematically absent."""
        rng = np.random.default_rng([self.p.seed, 7])
        size = 2 * hmax + 1
        r = np.arange(-hmax, hmax + 1)
        h, k, l = np.meshgrid(r, r, r, indexing="ij")  # noqa: E741
        B = np.array(gemmi.UnitCell(*self.p.cell).frac.mat.tolist()).T
        G = B.T @ B  # reciprocal metric: 1/d^2 = h.G.h
        s2 = G[0, 0] * h * h + G[1, 1] * k * k + G[2, 2] * l * l
        s2 += 2 * (G[0, 1] * h * k + G[0, 2] * h * l + G[1, 2] * k * l)
        wilson = rng.exponential(1.0, size=(size,) * 3)
        table = self.p.peak_scale * wilson * np.exp(-self.p.b_factor * s2 / 2)
        table *= allowed_table(self.space_group, hmax, "full")
        table[hmax, hmax, hmax] = 0.0
        return table.astype(np.float64)

    def geometry(self, kind: str = "crystal", expt_path=None) -> SweepGeometry:
        if expt_path is None:
            import tempfile

            with tempfile.TemporaryDirectory() as d:
                path = Path(d) / "sim.expt"
                path.write_text(json.dumps(self.expt_dict(kind, "img_#####.cbf")))
                return SweepGeometry(read_expt(path))
        return SweepGeometry(read_expt(expt_path))

    def background_rate(self, geom: SweepGeometry) -> np.ndarray:
        """Expected air-scatter counts per second per pixel (ny, nx), the same in both
        sweeps: what the background sweep measures and correct subtracts."""
        p = self.p
        ny, nx = geom.shape
        xyz = geom.lab_position(np.arange(ny)[:, None], np.arange(nx)[None, :])
        d = np.linalg.norm(xyz, axis=-1)
        cos2t = (xyz @ geom.s0) / (d * np.linalg.norm(geom.s0))
        two_theta = np.degrees(np.arccos(np.clip(cos2t, -1, 1)))
        normal = geom.panel.normal
        solid = (xyz @ normal / d) * (p.distance / d) ** 2  # relative to the normal pixel
        e0 = geom.s0 / np.linalg.norm(geom.s0)
        pv1 = np.cross(e0, geom.beam.polarization_normal)
        pol = 1 - ((xyz @ pv1) / d) ** 2 * 0.999
        return p.air_rate * np.exp(-two_theta / p.air_falloff_deg) * solid * pol

    # -- scaling truth ---------------------------------------------------------------------------

    def beam_scale(self, phi) -> np.ndarray:
        """b(phi): the crystal's overall scale times its drift (phi in degrees)."""
        p = self.p
        x = np.asarray(phi, float) - p.phi_start
        slope, amp, period = p.drift
        return p.overall_scale * (1 + slope * x + amp * np.sin(2 * np.pi * x / period))

    def detector_response(self, iy, ix) -> np.ndarray:
        """d at pixel positions (iy, ix) (broadcast), pixel units along slow and fast."""
        p = self.p
        fx = np.asarray(ix, float) / p.nx
        fy = np.asarray(iy, float) / p.ny
        wave = np.cos(2 * np.pi * (1.2 * fx + 0.35)) * np.cos(2 * np.pi * 0.8 * fy)
        return 1 + p.detector_response * wave

    def absorption(self, iy, ix, phi) -> np.ndarray:
        """a at pixel positions (iy, ix) and phi (degrees), broadcast."""
        p = self.p
        fx = np.asarray(ix, float) / p.nx + 0 * np.asarray(iy, float)
        x = np.asarray(phi, float) - p.phi_start
        return 1 + p.absorption * (fx - 0.5) * np.cos(2 * np.pi * x / 40.0)

    def crystal_scale(self, frame: int) -> np.ndarray:
        """a b d of every pixel (ny, nx) on crystal frame ``frame`` (at the frame centre)."""
        p = self.p
        phi = p.phi_start + (frame + 0.5) * p.osc
        iy, ix = np.arange(p.ny)[:, None] + 0.5, np.arange(p.nx)[None, :] + 0.5
        return self.beam_scale(phi) * self.detector_response(iy, ix) * self.absorption(iy, ix, phi)

    def scaled(self) -> bool:
        p = self.p
        return bool(
            p.overall_scale != 1 or p.drift[:2] != (0.0, 0.0) or p.detector_response or p.absorption
        )

    # -- diffuse truth ----------------------------------------------------------------------------

    def reciprocal_basis(self) -> np.ndarray:
        """B: hkl -> the crystal's Cartesian reciprocal vector (1/Angstrom)."""
        return np.array(gemmi.UnitCell(*self.p.cell).frac.mat.tolist()).T

    def intensity_scale(self) -> float:
        """Counts/s at the normal-incidence pixel per unit D: 1 / (solid angle x efficiency x
        attenuation) of that pixel, so the rate parameters read as counts/s there."""
        p = self.p
        import xraydb

        mu_si = float(xraydb.material_mu("Si", 12398.419843320026 / p.wavelength)) / 10
        omega = (p.pixel / p.distance) ** 2
        efficiency = 1 - np.exp(-mu_si * 0.32)
        attenuation = np.exp(-air_attenuation_per_mm(p.wavelength) * p.distance)
        return 1.0 / (omega * efficiency * attenuation)

    def _diffuse_args(self):
        if getattr(self, "_dargs", None) is None:
            p = self.p
            B = self.reciprocal_basis()
            k = self.intensity_scale()
            ops = symmetry_fields(self.space_group)["laue_group_operators"]
            u = np.asarray(p.aniso_axis, float)
            u /= np.linalg.norm(u)
            Binv = np.linalg.inv(B)
            V = np.array([(B @ op.T @ Binv).T @ u for op in ops])  # v = R_W^T u, W = op.T
            V /= np.linalg.norm(V, axis=1, keepdims=True)
            rstar = float(np.linalg.norm(B, axis=0).max())
            iso = np.array(
                [p.halo_rate * k, p.halo_s, p.halo_width, p.ring_rate * k, p.ring_s, p.ring_width]
            )
            aniso = np.array([p.aniso_rate * k, p.aniso_s])
            halo = np.array(
                [
                    p.bragg_halo_rate * k,
                    p.bragg_halo_s,
                    p.bragg_halo_radial * rstar,
                    p.bragg_halo_tangential * rstar,
                    p.bragg_halo_anisotropy,
                ]
            )
            hmax = 64
            allowed = allowed_table(self.space_group, hmax, "full")
            self._dargs = (B, iso, aniso, np.ascontiguousarray(V), halo, allowed, hmax)
        return self._dargs

    def diffuse_intensity(self, hkl) -> np.ndarray:
        """The true diffuse intensity D at Miller indices hkl (..., 3), mdx2's units."""
        hkl = np.asarray(hkl, float)
        flat = np.ascontiguousarray(hkl.reshape(-1, 3))
        out = np.empty(len(flat))
        _diffuse_kernel(flat, *self._diffuse_args(), out)
        return out.reshape(hkl.shape[:-1])

    def isotropic_intensity(self, s) -> np.ndarray:
        """The isotropic halo + solvent ring part of D at 1/d = s."""
        p = self.p
        k = self.intensity_scale()
        s = np.asarray(s, float)
        return k * (
            p.halo_rate * np.exp(-0.5 * ((s - p.halo_s) / p.halo_width) ** 2)
            + p.ring_rate * np.exp(-0.5 * ((s - p.ring_s) / p.ring_width) ** 2)
        )

    def diffuse_counts(self, frame: int) -> np.ndarray:
        """Noise-free diffuse counts per pixel on crystal frame ``frame`` (call prepare)."""
        M = self._M[frame]
        hkl = np.einsum("ij,jyx->yxi", M, self._q)
        return self.diffuse_intensity(hkl) * self._correction * self.p.exposure

    def salt_spot(self) -> tuple[int, int]:
        """(iy, ix) of the stray bright 3x3 spot in the background sweep."""
        p = self.p
        return int(p.ny * 0.8), int(p.nx * 0.25)

    # -- synthesis ------------------------------------------------------------------------------

    def prepare(self, geom: SweepGeometry):
        d_min, _ = geom.d_spacing_range()
        hmax = index_limit(max(self.p.cell[:3]), d_min)
        self._q = geom.scattering_vector_image()
        self._M = geom.frame_matrices()
        self._table = self.intensity_table(hmax)
        self._hmax = hmax
        self._P = np.linalg.inv(self.cov)
        ny, nx = geom.shape
        c = geom.corrections(np.arange(ny), np.arange(nx), air_attenuation_per_mm(geom.wavelength))
        self._correction = c["solid_angle"] * c["polarization"] * c["efficiency"] * c["attenuation"]

    def bragg_expected(self, frame: int) -> np.ndarray:
        """Noise-free Bragg photons per pixel on crystal frame ``frame`` (call prepare first)."""
        out = np.empty(self._q.shape[1:])
        bragg_image(self._q, self._M[frame], self.r0, self._P, self._table, self._hmax, 36.0, out)
        return out

    def frame(self, kind: str, index: int, bkg_counts: np.ndarray, invalid: np.ndarray):
        """One noisy frame (int32, -1 where invalid) and its Bragg expectation (or None)."""
        p = self.p
        rng = np.random.default_rng([p.seed, 1 if kind == "crystal" else 2, index])
        expected = bkg_counts.copy()
        if p.detector_response:
            iy, ix = np.arange(p.ny)[:, None] + 0.5, np.arange(p.nx)[None, :] + 0.5
            expected *= self.detector_response(iy, ix)
        bragg = None
        if kind == "crystal":
            bragg = self.bragg_expected(index)
            crystal = bragg + self.diffuse_counts(index)
            if self.scaled():
                crystal *= self.crystal_scale(index)
            expected += crystal
        counts = rng.poisson(expected).astype(np.int32)
        ny, nx = counts.shape
        for _ in range(p.zingers_per_frame):  # cosmic rays / zingers
            counts[rng.integers(ny), rng.integers(nx)] += int(rng.integers(500, 5000))
        if kind == "background" and p.salt_rate > 0:
            y, x = self.salt_spot()
            counts[y - 1 : y + 2, x - 1 : x + 2] += rng.poisson(
                p.salt_rate * p.bkg_exposure, (3, 3)
            ).astype(np.int32)
        counts[invalid] = -1
        return counts, bragg

    def truth(self) -> dict:
        evals, evecs = np.linalg.eigh(self.cov)
        return {
            "preset": asdict(self.p),
            "r0": self.r0.tolist(),
            "cov": self.cov.tolist(),
            "semi_axes": np.sqrt(evals).tolist(),
            "principal_axes": evecs.T.tolist(),
            "space_group": self.space_group.hm,
            "salt_spot_iy_ix": list(self.salt_spot()),
            "intensity_scale": self.intensity_scale(),
            "beam_scale_per_frame": self.beam_scale(
                self.p.phi_start + (np.arange(self.p.n_frames) + 0.5) * self.p.osc
            ).tolist(),
            "note": (
                "Bragg counts = I(hkl) * exp(-d2/2), d2 the Mahalanobis distance of "
                "(hkl - round(hkl) - r0) under cov, at the pixel centre and frame-centre angle; "
                "diffuse counts = D(hkl) * solid angle * polarisation * efficiency * "
                "attenuation * exposure (Simulation.diffuse_intensity, rebuilt from this file "
                "by load_simulation); the crystal's counts (Bragg and diffuse) are multiplied "
                "by b(phi) a(x, y, phi) d(x, y) and the air scatter of both sweeps by d(x, y) "
                "(Simulation.beam_scale, absorption, detector_response; beam_scale_per_frame at "
                "frame centres)"
            ),
        }


def write_sweeps(
    p: Preset, outdir, kinds=("crystal", "background"), log=print, workers: int = 1
) -> dict:
    """Write ``outdir/<kind>/{sweep.expt, images/...}`` and ``outdir/truth.json``.

    ``workers`` > 1: CBF and SMV frames are made in that many processes (every frame has its
    own random stream, so the files are the same as with one)."""
    outdir = Path(outdir)
    sim = Simulation(p)
    ext = {"cbf": "cbf", "smv": "img", "h5": "h5"}[p.image_format]
    written = {}
    for kind in kinds:
        d = outdir / kind
        (d / "images").mkdir(parents=True, exist_ok=True)
        if p.image_format == "h5":
            template = f"images/{kind}_master.h5"
        else:
            template = f"images/{kind}_#####.{ext}" + (f".{p.compress}" if p.compress else "")
        doc = sim.expt_dict(kind, template)
        expt_path = d / "sweep.expt"
        expt_path.write_text(json.dumps(doc, indent=1))
        n = p.n_frames if kind == "crystal" else p.bkg_frames
        if workers > 1 and p.image_format != "h5" and n >= 2 * workers:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: the parent's numba thread pool does not survive a fork
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                jobs = [(p, d, kind, list(range(k, n, workers))) for k in range(workers)]
                list(pool.map(_write_frames_job, jobs))
            if log:
                log(f"{kind}: wrote {n} frames in {workers} processes")
        else:
            _write_frames(sim, d, kind, range(n), log)
        written[kind] = str(expt_path)
    truth = sim.truth()
    (outdir / "truth.json").write_text(json.dumps(truth, indent=1))
    written["truth"] = str(outdir / "truth.json")
    return written


def _write_frames_job(job):
    p, d, kind, frames = job
    _write_frames(Simulation(p), d, kind, frames, None)


def _write_frames(sim: Simulation, d: Path, kind: str, frames, log):
    """Frames ``frames`` of one sweep as image files (all of them for HDF5) under ``d``."""
    p = sim.p
    ext = {"cbf": "cbf", "smv": "img", "h5": "h5"}[p.image_format]
    geom = SweepGeometry(read_expt(d / "sweep.expt"))
    crystal = kind == "crystal"
    n = p.n_frames if crystal else p.bkg_frames
    expo = p.exposure if crystal else p.bkg_exposure
    bkg_counts = sim.background_rate(geom) * expo
    invalid = sim.invalid_mask()
    if crystal:
        sim.prepare(geom)
    stack = []
    for i in frames:
        counts, _ = sim.frame(kind, i, bkg_counts, invalid)
        name = str(d / "images" / f"{kind}_{i + 1:05d}.{ext}")
        if p.image_format == "cbf":
            hdr = pilatus_header(
                exposure=expo,
                phi_start=p.phi_start + i * (p.osc if crystal else p.bkg_osc),
                phi_width=p.osc if crystal else p.bkg_osc,
                wavelength=p.wavelength,
                distance_mm=p.distance,
                beam_xy_px=(p.beam_centre[0] * p.nx, p.beam_centre[1] * p.ny),
                pixel_mm=p.pixel,
            )
            write_cbf(name, counts, hdr, p.compress)
        elif p.image_format == "smv":
            raw = np.where(counts < 0, 0, np.minimum(counts, 65535)).astype(np.uint16)
            write_smv(name, raw, {"PIXEL_SIZE": p.pixel, "TIME": expo}, p.compress)
        else:
            stack.append(np.where(counts < 0, 2**32 - 1, counts).astype(np.uint32))
        if log and (i + 1) % 25 == 0:
            log(f"{kind}: wrote {i + 1} of {n} frames")
    if p.image_format == "h5":
        write_eiger(str(d / f"images/{kind}_master.h5"), np.stack(stack), pixel_mask=invalid)


def load_simulation(truth_path) -> Simulation:
    """Rebuild the Simulation (and so every truth function) from a truth.json."""
    t = json.loads(Path(truth_path).read_text())
    fields = dict(t["preset"])
    for k in (
        "cell",
        "beam_centre",
        "module",
        "gap",
        "rotation_axis",
        "setting_rotation_deg",
        "r0",
        "semi_axes",
        "drift",
        "crystal_rotation_deg",
    ):
        if k in fields:  # truth files of older versions lack the newer keys
            fields[k] = tuple(fields[k])
    return Simulation(Preset(**fields))


def orbit_keys(space_group: gemmi.SpaceGroup, vox: np.ndarray) -> np.ndarray:
    """A canonical int64 key of each integer index triple's orbit under the point group and
    Friedel's law (the largest packed image): equal keys = symmetry-equivalent. Built from
    gemmi's operators alone, independent of diffuseflow's asymmetric-unit code."""
    rots = {tuple(np.array(op.rot).ravel() // op.DEN) for op in space_group.operations().sym_ops}
    mats = [np.array(r, np.int64).reshape(3, 3) for r in rots]
    mats += [-m for m in mats]
    vox = np.asarray(vox, np.int64)
    best = None
    for m in mats:
        img = vox @ m  # Miller indices transform as row vectors: h' = h R
        key = pack_voxels(img)
        best = key if best is None else np.maximum(best, key)
    return best


def voxel_truth(sim: Simulation, geom: SweepGeometry, excluded, ndiv, frames=None):
    """The true diffuse intensity of every voxel orbit as the integrated pixels see it:
    sum(D C t g) / sum(C t g) over the valid, unmasked pixels of the voxel and all its symmetry
    mates (C = the pixel's correction product, g = a b d of a scaled simulation, else 1),
    i.e. what a merge of noise-free, scaled counts would give. ``excluded(i)`` -> bool
    (ny, nx) image of frame i's unused pixels.

    Returns (orbit keys (see :func:`orbit_keys`, sorted), truth, weight).
    """
    sim.prepare(geom)
    ndiv = np.asarray(ndiv, float)
    frames = range(geom.scan.num_images) if frames is None else frames
    keys, num, den = [], [], []
    for i in frames:
        use = ~excluded(i)
        hkl = np.einsum("ij,jyx->yxi", sim._M[i], sim._q)[use]
        w = sim._correction[use] * sim.p.exposure
        if sim.scaled():  # the counts carry a b d too: they weigh in the merge
            w = w * sim.crystal_scale(i)[use]
        d = sim.diffuse_intensity(hkl)
        key = orbit_keys(sim.space_group, np.rint(hkl * ndiv).astype(np.int64))
        u, inv = np.unique(key, return_inverse=True)
        keys.append(u)
        num.append(np.bincount(inv, weights=d * w))
        den.append(np.bincount(inv, weights=w))
    u, inv = np.unique(np.concatenate(keys), return_inverse=True)
    n = np.bincount(inv, weights=np.concatenate(num))
    w = np.bincount(inv, weights=np.concatenate(den))
    return u, n / w, w
