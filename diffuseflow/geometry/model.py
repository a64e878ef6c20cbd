"""Pixel -> Miller index geometry of a rotation sweep (``expt-geometry.md`` §2).

Two conventions, chosen with ``mdx2_compat``:

* physical (default): pixel index i covers [i, i+1) in DIALS' continuous pixel coordinates, so
  its centre is i + 0.5; scan-varying crystals are interpolated linearly in A, as DIALS does.
* mdx2-compatible: the bare pixel index is used (mdx2 evaluates at the pixel corner) and
  scan-varying crystals interpolate U by rotation and B linearly, as mdx2 1.0.5 does.

Both apply dxtbx's parallax correction when the panel asks for it.
"""

from __future__ import annotations

import math

import gemmi
import numpy as np

from diffuseflow.geometry.kernels import pixel_to_lab, scattering_planes
from diffuseflow.io.expt import Experiment


def rotation_matrices(axis: np.ndarray, angles_deg) -> np.ndarray:
    """Right-handed rotations about unit ``axis`` by ``angles_deg``; shape (..., 3, 3)."""
    e = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.deg2rad(np.asarray(angles_deg, float))[..., None, None]
    K = np.array([[0, -e[2], e[1]], [e[2], 0, -e[0]], [-e[1], e[0], 0]])
    return np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * (K @ K)


def unit_cell_of(A: np.ndarray) -> gemmi.UnitCell:
    """Unit cell of a setting matrix A (columns a*, b*, c*)."""
    M = np.linalg.inv(A)  # rows a, b, c
    a, b, c = np.linalg.norm(M, axis=1)

    def ang(u, v):
        return math.degrees(
            math.acos(np.clip(np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v), -1, 1))
        )

    return gemmi.UnitCell(a, b, c, ang(M[1], M[2]), ang(M[0], M[2]), ang(M[0], M[1]))


def decompose_UB(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split A = U.B with B = (fractionalisation matrix)^T in the PDB convention (as dxtbx)."""
    B = np.array(unit_cell_of(A).frac.mat.tolist()).T
    U = A @ np.linalg.inv(B)
    return U, B


def _rotation_interpolate(U0: np.ndarray, U1: np.ndarray, f: float) -> np.ndarray:
    """mdx2's U interpolation: rotate U0 by fraction f of the rotation taking U0 to U1."""
    R = U1 @ U0.T
    angle = math.acos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0))
    if angle < 1e-12:
        return U0.copy()
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    axis /= 2 * math.sin(angle)
    return rotation_matrices(axis, math.degrees(angle) * f) @ U0


class SweepGeometry:
    """Geometry of one rotation sweep: pixel positions, scattering vectors and Miller indices.

    Pixel indices are array indices (iy slow, ix fast); angles are degrees.
    """

    def __init__(self, expt: Experiment, mdx2_compat: bool = False):
        self.expt = expt
        self.mdx2_compat = mdx2_compat
        #: continuous pixel coordinate of array index i: centre (i + 0.5) or mdx2's corner (i)
        self.pixel_offset = 0.0 if mdx2_compat else 0.5
        self.beam = expt.beam
        self.panel = expt.panel
        self.gonio = expt.goniometer
        self.scan = expt.scan
        self.crystal = expt.crystal
        self.s0 = expt.beam.s0
        self.wavelength = expt.beam.wavelength
        self.shape = expt.panel.shape  # (ny, nx)

    # -- detector ---------------------------------------------------------------------------

    def lab_position(self, iy, ix) -> np.ndarray:
        """Lab position (mm) of pixel indices (iy, ix) (broadcast), parallax-corrected."""
        p = self.panel
        x = np.asarray(ix, float) + self.pixel_offset
        y = np.asarray(iy, float) + self.pixel_offset
        x, y = np.broadcast_arrays(x, y)
        out = np.empty(x.shape + (3,))
        pixel_to_lab(
            np.ascontiguousarray(x).reshape(-1),
            np.ascontiguousarray(y).reshape(-1),
            p.pixel_size[0], p.pixel_size[1], p.origin, p.fast_axis, p.slow_axis, p.normal,
            p.parallax, p.mu, p.thickness, out.reshape(-1, 3),
        )  # fmt: skip
        return out

    def scattering_vector(self, iy, ix) -> np.ndarray:
        """s1 - s0 in the lab frame (1/Angstrom) at pixel indices (iy, ix)."""
        xyz = self.lab_position(iy, ix)
        s1 = xyz / (np.linalg.norm(xyz, axis=-1, keepdims=True) * self.wavelength)
        return s1 - self.s0

    def scattering_vector_image(self) -> np.ndarray:
        """s1 - s0 for every pixel of the panel as three planes, shape (3, ny, nx), float64:
        ``scattering_vector`` of every pixel, bit for bit, in one compiled pass.

        Planes (not interleaved xyz) so that the per-pixel kernels read unit-stride rows.
        """
        p = self.panel
        out = np.empty((3, *self.shape))
        scattering_planes(
            self.pixel_offset, p.pixel_size[0], p.pixel_size[1], p.origin, p.fast_axis,
            p.slow_axis, p.normal, p.parallax, p.mu, p.thickness, self.wavelength,
            np.asarray(self.s0, float), out,
        )  # fmt: skip
        return out

    # -- rotation ---------------------------------------------------------------------------

    def phi_of_frame(self, frame) -> np.ndarray:
        """Rotation angle (degrees) at continuous frame coordinate (0 = start of frame 0)."""
        return self.scan.phi_start + self.scan.phi_width * np.asarray(frame, float)

    def frame_of_phi(self, phi) -> np.ndarray:
        return (np.asarray(phi, float) - self.scan.phi_start) / self.scan.phi_width

    def setting_matrix(self, phi) -> np.ndarray:
        """Crystal setting matrix A (at the datum) at rotation angle(s) phi: (..., 3, 3)."""
        c = self.crystal
        phi = np.asarray(phi, float)
        if c.A_at_scan_points is None:
            return np.broadcast_to(c.A, phi.shape + (3, 3)).copy()
        n = self.scan.num_images
        t = self.frame_of_phi(phi)
        out = np.empty(phi.shape + (3, 3))
        for idx in np.ndindex(phi.shape):
            ti = float(t[idx])
            b = min(max(int(math.floor(ti)), 0), n - 1)
            f = ti - b
            A0 = c.A_at_scan_points[b]
            if b + 1 >= len(c.A_at_scan_points):
                out[idx] = A0
            elif self.mdx2_compat:
                U0, B0 = decompose_UB(A0)
                U1, B1 = decompose_UB(c.A_at_scan_points[b + 1])
                out[idx] = _rotation_interpolate(U0, U1, f) @ ((1 - f) * B0 + f * B1)
            else:
                out[idx] = (1 - f) * A0 + f * c.A_at_scan_points[b + 1]
        return out

    def lab_to_hkl(self, phi) -> np.ndarray:
        """Matrices M(phi) with hkl = M . (s1 - s0); shape (..., 3, 3).

        From r = S.R(e, phi).F.A.h:  h = A^-1 . F^T . R(e, phi)^T . S^T . r.
        """
        phi = np.asarray(phi, float)
        R = rotation_matrices(self.gonio.rotation_axis, phi)
        F, S = self.gonio.fixed_rotation, self.gonio.setting_rotation
        A_inv = np.linalg.inv(self.setting_matrix(phi))
        return A_inv @ F.T @ np.swapaxes(R, -1, -2) @ S.T

    def hkl(self, phi, iy, ix) -> np.ndarray:
        """Exact Miller indices at rotation angle phi and pixel indices (iy, ix); (..., 3)."""
        phi, iy, ix = np.broadcast_arrays(
            np.asarray(phi, float), np.asarray(iy, float), np.asarray(ix, float)
        )
        q = self.scattering_vector(iy, ix)
        # one matrix per distinct angle: peak pixels share a few hundred frame angles
        uniq, inverse = np.unique(phi, return_inverse=True)
        M = self.lab_to_hkl(uniq)[inverse.reshape(phi.shape)]
        return np.einsum("...ij,...j->...i", M, q)

    def frame_matrices(self) -> np.ndarray:
        """lab_to_hkl at every frame centre: (n_frames, 3, 3)."""
        return self.lab_to_hkl(self.scan.frame_centres())

    # -- mdx2's Miller-index lookup grid and corrections ----------------------------------------

    def grid_axes(self, sample_spacing=(1, 10, 10)):
        """Edge-sampled grid axes (phi_g, iy_g, ix_g) of mdx2's import_geometry (§3.1)."""
        s_phi, s_y, s_x = sample_spacing
        n = self.scan.num_images
        ny, nx = self.shape
        n_phi = 1 + math.ceil(n * self.scan.phi_width / s_phi)
        phi_g = self.scan.phi_start + self.scan.phi_width * np.linspace(0, n, n_phi)
        iy_g = np.linspace(-0.5, ny - 0.5, 1 + math.ceil(ny / s_y))
        ix_g = np.linspace(-0.5, nx - 0.5, 1 + math.ceil(nx / s_x))
        return phi_g, iy_g, ix_g

    def miller_grid(self, sample_spacing=(1, 10, 10)):
        """(phi_g, iy_g, ix_g, hkl[nphi, ny_g, nx_g, 3]) on the lookup grid."""
        phi_g, iy_g, ix_g = self.grid_axes(sample_spacing)
        q = self.scattering_vector(iy_g[:, None], ix_g[None, :])  # (ny_g, nx_g, 3)
        M = self.lab_to_hkl(phi_g)  # (nphi, 3, 3)
        hkl = np.einsum("pij,yxj->pyxi", M, q)
        return phi_g, iy_g, ix_g, hkl

    def corrections(self, iy, ix, air_mu_per_mm: float) -> dict[str, np.ndarray]:
        """mdx2's per-pixel correction factors on the (iy, ix) grid (§3.1)."""
        xyz = self.lab_position(np.asarray(iy)[:, None], np.asarray(ix)[None, :])
        return self._corrections(xyz, air_mu_per_mm)

    def corrections_at(self, iy, ix, air_mu_per_mm: float) -> dict[str, np.ndarray]:
        """The same factors at points (iy, ix) (continuous array indices, broadcast)."""
        return self._corrections(self.lab_position(iy, ix), air_mu_per_mm)

    def _corrections(self, xyz, air_mu_per_mm: float) -> dict[str, np.ndarray]:
        p = self.panel
        d = np.linalg.norm(xyz, axis=-1)
        cosw = (xyz @ p.normal) / d
        solid_angle = p.pixel_size[0] * p.pixel_size[1] * cosw / d**2
        if p.mu > 0 and p.thickness > 0:
            efficiency = 1 - np.exp(-p.mu * p.thickness / cosw)
        else:
            efficiency = np.ones_like(d)
        attenuation = np.exp(-air_mu_per_mm * d)
        e0 = self.s0 / np.linalg.norm(self.s0)
        pv1 = np.cross(e0, self.beam.polarization_normal)
        pv2 = np.cross(pv1, e0)
        pf = self.beam.polarization_fraction
        c1, c2 = (xyz @ pv1) / d, (xyz @ pv2) / d
        polarization = pf * (1 - c1**2) + (1 - pf) * (1 - c2**2)
        m = self.gonio.setting_rotation @ self.gonio.rotation_axis
        inverse_lorentz = np.abs(np.cross(e0, xyz) @ m) / d
        d3s = inverse_lorentz * solid_angle * np.deg2rad(self.scan.phi_width) / self.wavelength**3
        return {
            "solid_angle": solid_angle,
            "efficiency": efficiency,
            "attenuation": attenuation,
            "polarization": polarization,
            "inverse_lorentz": inverse_lorentz,
            "d3s": d3s,
        }

    def d_spacing_range(self) -> tuple[float, float]:
        """(d_min, d_max) in Angstrom over the whole panel (corners and edges)."""
        ny, nx = self.shape
        iy = np.linspace(0, ny - 1, 65)
        ix = np.linspace(0, nx - 1, 65)
        q = np.linalg.norm(self.scattering_vector(iy[:, None], ix[None, :]), axis=-1)
        return 1 / q.max(), 1 / max(q.min(), 1e-12)


def air_attenuation_per_mm(wavelength: float) -> float:
    """Linear attenuation coefficient of air (1/mm) at ``wavelength`` (Angstrom), from xraydb."""
    import xraydb

    energy_ev = 12398.419843320026 / wavelength
    return float(xraydb.material_mu("air", energy_ev)) / 10.0
