"""mask_peaks: mask every pixel within sigma_cutoff of an allowed reflection, plus hot pixels.

Works slab by slab: the per-pixel test runs in a compiled kernel, each slab is compressed in
parallel and written straight into the chunked bool dataset ``/entry/mask/signal``; memory stays
at one slab whatever the sweep length.
"""

from __future__ import annotations

import numpy as np

from diffuseflow.errors import InputError
from diffuseflow.geometry.kernels import grid_cells, peak_mask_grid, peak_mask_tiled, pixel_tiles
from diffuseflow.geometry.symmetry import allowed_table, index_limit

#: pixels per side of the blocks the physical-mode mask bounds before testing pixels: the
#: smaller the block, the less of reciprocal space it spans and the more blocks are skipped;
#: measured on the Pilatus 6M bench sweep (ms per frame, 1 thread): 2 px 7.4, 4 px 9.9, 8 px
#: 14.6, the pixel-by-pixel kernel 20.4
TILE = 2


class PeakMasker:
    """Computes the Bragg mask of any frame for one geometry, peak model and absence rule."""

    def __init__(self, geomfile, model, sigma_cutoff, mdx2_compat, absences, phi, ny, nx):
        self.cutoff2 = float(sigma_cutoff) ** 2
        self.r0 = np.ascontiguousarray(model.r0, float)
        self.P = np.ascontiguousarray(model.precision, float)
        self.mdx2_compat = mdx2_compat
        self.phi = np.asarray(phi, float)
        sg = geomfile.space_group()
        if mdx2_compat:
            grid = geomfile.grid_hkl()
            self.gh, self.gk, self.gl = (np.ascontiguousarray(grid[..., i]) for i in range(3))
            hmax = int(np.ceil(np.abs(grid).max())) + 2
            phi_g, iy_g, ix_g = geomfile.grid_axes
            self.p0, self.wp = grid_cells(phi_g, self.phi)
            self.y0, self.wy = grid_cells(iy_g, np.arange(ny, dtype=float))
            self.x0, self.wx = grid_cells(ix_g, np.arange(nx, dtype=float))
        else:
            geom = geomfile.sweep_geometry(False)
            self.q = np.ascontiguousarray(geom.scattering_vector_image())
            self.tile_centre, self.tile_radius = pixel_tiles(self.q, TILE)
            # the ellipsoid's half-width along h, k and l
            self.extent = np.sqrt(self.cutoff2 * np.diag(np.linalg.inv(self.P)))
            self.M = geom.lab_to_hkl(self.phi)
            d_min, _ = geom.d_spacing_range()
            cell_max = float(np.linalg.norm(geom.crystal.real_space_matrix, axis=1).max())
            hmax = index_limit(cell_max * 1.05, d_min)
        self.hmax = hmax
        self.allowed = allowed_table(sg, hmax, absences)
        self.shape = (ny, nx)

    def frame(self, i: int, out: np.ndarray | None = None) -> np.ndarray:
        out = np.empty(self.shape, np.bool_) if out is None else out
        if self.mdx2_compat:
            peak_mask_grid(
                self.gh, self.gk, self.gl, int(self.p0[i]), float(self.wp[i]),
                self.y0, self.wy, self.x0, self.wx,
                self.r0, self.P, self.allowed, self.hmax, self.cutoff2, out,
            )  # fmt: skip
        else:
            M = np.ascontiguousarray(self.M[i])
            peak_mask_tiled(
                self.q, self.tile_centre, self.tile_radius, TILE, M, self.r0, self.P,
                self.extent, self.allowed, self.hmax, self.cutoff2, out,
            )  # fmt: skip
        return out


def check_peaks_inside(peaks, axes, peaks_path, data_path):
    """Refuse peak pixels that lie outside the image series' axes (a peaks.nxs from another
    sweep, for files that carry no sweep record): clamping them would mask wrong pixels."""
    for values, axis, name in zip(peaks, axes, ("phi", "iy", "ix"), strict=True):
        values = np.asarray(values, float)
        if values.size and (values.min() < axis[0] - 0.5 or values.max() > axis[-1] + 0.5):
            raise InputError(
                f"{peaks_path}: peak pixels reach {name} {values.min():g}..{values.max():g}, "
                f"outside {data_path}'s {axis[0]:g}..{axis[-1]:g}; made from another sweep?"
            )


def hot_pixel_indices(peaks_phi, peaks_iy, peaks_ix, phi_axis, iy_axis, ix_axis):
    """Array indices of hot pixels: round of the interpolated fractional index (as mdx2)."""

    def idx(axis, v):
        return np.rint(np.interp(v, axis, np.arange(len(axis), dtype=float))).astype(np.int64)

    return idx(phi_axis, peaks_phi), idx(iy_axis, peaks_iy), idx(ix_axis, peaks_ix)


def write_mask(
    masker, series_axes, shape, chunks, hot, bragg, dset_writer, frame_range=None, log=print
):
    """Compute and write the mask slab by slab (only frames [start, stop) of frame_range, which
    must be chunk-aligned, if given). Returns the masked pixels per frame."""
    n, ny, nx = shape
    phi_idx, iy_idx, ix_idx = hot
    order = np.argsort(phi_idx, kind="stable")
    phi_idx, iy_idx, ix_idx = phi_idx[order], iy_idx[order], ix_idx[order]
    per_frame = np.zeros(n, np.int64)
    first, last = frame_range or (0, n)
    for start in range(first, last, chunks[0]):
        stop = min(start + chunks[0], n)
        slab = np.empty((stop - start, ny, nx), np.bool_)
        for i in range(start, stop):
            masker.frame(i, slab[i - start])
        if bragg:
            np.logical_not(slab, out=slab)
        else:
            lo, hi = np.searchsorted(phi_idx, [start, stop])
            slab[phi_idx[lo:hi] - start, iy_idx[lo:hi], ix_idx[lo:hi]] = True
        dset_writer.write(start, slab)
        per_frame[start:stop] = np.count_nonzero(slab, axis=(1, 2))
        log(f"frames {start} to {stop - 1}: masked {per_frame[start:stop].sum() / slab.size:.3%}")
    done = max(1, (last - first) * ny * nx)
    log(f"Masked pixels in frames {first} to {last - 1}: {per_frame.sum() / done:.2%}")
    return per_frame
