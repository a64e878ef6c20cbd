"""Import: a DIALS experiment + images -> geometry.nxs and data.nxs (mdx2 1.0.5 layouts)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np

from diffuseflow.algorithms.peaks import HIST_BINS, HIST_STRIDE, STRONG_FRACTION, scan_frame_strong
from diffuseflow.errors import InputError
from diffuseflow.geometry.model import (
    SweepGeometry,
    air_attenuation_per_mm,
    decompose_UB,
    unit_cell_of,
)
from diffuseflow.geometry.symmetry import space_group_from_hall, symmetry_fields
from diffuseflow.io import nexus
from diffuseflow.io.expt import Experiment, experiment_from_text, experiment_to_dict
from diffuseflow.io.images import Region, count_invalid, frame_reader
from diffuseflow.io.strong import StrongPixelWriter

#: keep one slab of frames (the unit of work) under this many bytes by default
SLAB_BYTES = 256 * 2**20
#: mdx2's default (y, x) chunk: one Pilatus module plus its gaps
DEFAULT_TILE = (212, 494)

#: the import lists every pixel above this many counts for find_peaks (config
#: import.strong_pixel_floor): a count_threshold at or above it never decodes the stack again
DEFAULT_STRONG_FLOOR = 10.0

CONVENTION_CENTRE = "pixel_centre"
CONVENTION_CORNER = "pixel_corner_mdx2"


def mdx2_frames_per_chunk(phi_width: float, n_frames: int) -> int:
    """mdx2's default number of frames per chunk: 5-6 degrees of rotation (§2.5)."""
    if phi_width == 0:
        return min(50, n_frames)
    d = round(180 / phi_width)
    if d < 1260:
        for m in (5, 6):
            if (m * d) % 180 == 0:
                return min(m * d // 180, n_frames)
        return min(10, n_frames)
    for total, n in ((18000, 50), (14400, 40), (16200, 45), (36000, 50), (32400, 45)):
        if total % d == 0:
            return min(n, n_frames)
    return min(40, n_frames)


def default_chunks(expt: Experiment) -> tuple[int, int, int]:
    ny, nx = expt.panel.shape
    frames = mdx2_frames_per_chunk(expt.scan.phi_width, expt.scan.num_images)
    frames = max(1, min(frames, SLAB_BYTES // (ny * nx * 4)))
    return (frames, min(DEFAULT_TILE[0], ny), min(DEFAULT_TILE[1], nx))


def resolve_chunks(expt: Experiment, requested) -> tuple[int, int, int]:
    """--chunks F Y X; a value <= 0 keeps the default for that axis (as in mdx2)."""
    default = default_chunks(expt)
    if not requested:
        return default
    if len(requested) != 3:
        raise InputError("--chunks needs three numbers: frames, rows, columns")
    n = (expt.scan.num_images,) + expt.panel.shape
    return tuple(
        int(min(r, m)) if r > 0 else d for r, d, m in zip(requested, default, n, strict=True)
    )


# ------------------------------------------------------------------------------------------
# geometry.nxs


def write_geometry(
    expt: Experiment,
    outfile,
    sample_spacing=(1, 10, 10),
    mdx2_compat: bool = False,
    parameters: dict | None = None,
    log=print,
):
    if expt.crystal is None:
        raise InputError(f"{expt.path}: experiment has no crystal model (index the sweep first)")
    if any(s <= 0 for s in sample_spacing):
        raise InputError(f"--sample_spacing must be positive, is {list(sample_spacing)}")
    sg = space_group_from_hall(expt.crystal.hall_symbol, str(expt.path))
    geom = SweepGeometry(expt, mdx2_compat=mdx2_compat)
    phi_g, iy_g, ix_g, hkl = geom.miller_grid(sample_spacing)
    log(f"Miller index grid (phi, iy, ix, hkl): {hkl.shape}")
    corr = geom.corrections(iy_g, ix_g, air_attenuation_per_mm(geom.wavelength))
    log(f"Corrections (iy, ix, n): {(len(iy_g), len(ix_g), len(corr))}")
    cell = unit_cell_of(expt.crystal.A)
    log(f"Space group: {sg.hm}")
    log("Unit cell: " + " ".join(f"{v:.3f}" for v in cell.parameters))
    params = dict(
        parameters or {},
        sample_spacing=list(sample_spacing),
        mdx2_compat=mdx2_compat,
        experiment=expt.index,
        frames=list(expt.scan.image_range),
    )
    with nexus.atomic_output(outfile) as tmp:
        with nexus.new_file(
            tmp, "import_geometry", params, [expt.path], nexus.sweep_record(expt)
        ) as f:
            entry = f["entry"]
            c = nexus.mdx2_group(entry, "crystal", "mdx2.geometry", "Crystal", "NXsample")
            c.create_dataset("space_group", data=sg.hm)
            c.create_dataset(
                "unit_cell", data=[cell.a, cell.b, cell.c, cell.alpha, cell.beta, cell.gamma]
            )
            U, _ = decompose_UB(expt.crystal.A)
            c.create_dataset("orientation_matrix", data=U)
            c.create_dataset("ub_matrix", data=expt.crystal.A)
            s = nexus.mdx2_group(entry, "symmetry", "mdx2.geometry", "Symmetry")
            for k, v in symmetry_fields(sg).items():
                s.create_dataset(k, data=v)
            cg = nexus.mdx2_group(entry, "corrections", "mdx2.geometry", "Corrections")
            for name, arr in corr.items():
                nexus.nxdata(cg, name, arr, {"iy": iy_g, "ix": ix_g})
            mi = nexus.mdx2_group(entry, "miller_index", "mdx2.geometry", "MillerIndex")
            mi.attrs["convention"] = CONVENTION_CORNER if mdx2_compat else CONVENTION_CENTRE
            for i, name in enumerate("hkl"):
                g = nexus.nxdata(mi, name, hkl[..., i], {"phi": phi_g, "iy": iy_g, "ix": ix_g})
                g["phi"].attrs["units"] = "degree"
            # diffuseflow's own record: the resolved experiment, for exact per-pixel geometry
            entry.create_dataset(
                "diffuseflow_experiment", data=json.dumps(experiment_to_dict(expt))
            )


class GeometryFile:
    """What later steps need from geometry.nxs: exact geometry and/or mdx2's lookup grid."""

    def __init__(self, path):
        self.path = Path(path)
        with nexus.open_input(path, "geometry.nxs", ["miller_index", "symmetry"]) as f:
            mi = f["entry/miller_index"]
            self.convention = mi.attrs.get("convention", CONVENTION_CORNER)
            self.grid_axes = tuple(mi["h"][a][()] for a in ("phi", "iy", "ix"))
            self._mi = None
            sym = f["entry/symmetry"]
            self.space_group_symbol = _as_str(sym["space_group_symbol"][()])
            self.reflection_conditions = _as_str(sym["reflection_conditions"][()])
            self.laue_operators = np.asarray(sym["laue_group_operators"][()], float)
            self.reciprocal_space_asu = _as_str(sym["reciprocal_space_asu"][()])
            ub = f.get("entry/crystal/ub_matrix")
            self.ub_matrix = None if ub is None else np.asarray(ub[()], float)
            text = f.get("entry/diffuseflow_experiment")
            self.experiment = (
                experiment_from_text(_as_str(text[()]), self.path) if text is not None else None
            )

    def grid_hkl(self) -> np.ndarray:
        if self._mi is None:
            with h5py.File(self.path, "r") as f:
                mi = f["entry/miller_index"]
                self._mi = np.stack([mi[c]["signal"][()] for c in "hkl"], axis=-1)
        return self._mi

    def correction_grid(self):
        """mdx2's correction images: (iy, ix, {name: (ny_g, nx_g) values})."""
        with h5py.File(self.path, "r") as f:
            g = f["entry/corrections"]
            values = {name: g[name]["signal"][()] for name in g}
            return g["solid_angle/iy"][()], g["solid_angle/ix"][()], values

    def space_group(self):
        import gemmi

        if self.experiment is not None and self.experiment.crystal is not None:
            return space_group_from_hall(self.experiment.crystal.hall_symbol, str(self.path))
        sg = gemmi.find_spacegroup_by_name(self.space_group_symbol)
        if sg is None:
            raise InputError(f"{self.path}: unknown space group {self.space_group_symbol!r}")
        return sg

    def sweep_geometry(self, mdx2_compat: bool) -> SweepGeometry:
        if self.experiment is None:
            raise InputError(
                f"{self.path}: has no diffuseflow experiment record (written by mdx2?); exact "
                "geometry needs diffuseflow's import_geometry, or use --mdx2_compat"
            )
        return SweepGeometry(self.experiment, mdx2_compat=mdx2_compat)

    def check_matches(self, series):
        """Refuse an image series from another sweep than this geometry."""
        e = self.experiment
        if e is not None:
            want = (e.scan.num_images,) + e.panel.shape
            if tuple(series.shape) != want:
                raise InputError(
                    f"{series.path}: image series shape {tuple(series.shape)} does not match "
                    f"{self.path} (frames, ny, nx = {want})"
                )
        phi_g = self.grid_axes[0]
        if series.phi.min() < phi_g.min() - 1e-6 or series.phi.max() > phi_g.max() + 1e-6:
            raise InputError(
                f"{series.path}: rotation range {series.phi.min():g}-{series.phi.max():g} deg "
                f"lies outside {self.path}'s scan ({phi_g.min():g}-{phi_g.max():g} deg)"
            )

    def check_convention(self, mdx2_compat: bool):
        want = CONVENTION_CORNER if mdx2_compat else CONVENTION_CENTRE
        if mdx2_compat and self.convention != want:
            raise InputError(
                f"{self.path}: lookup grid uses the {self.convention} convention; re-run "
                "import_geometry with --mdx2_compat to compare with mdx2"
            )


def _as_str(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# ------------------------------------------------------------------------------------------
# data.nxs


def write_data(
    expt: Experiment,
    outfile,
    chunks=None,
    untrusted: list[Region] | None = None,
    nproc: int = 1,
    parameters: dict | None = None,
    log=print,
    reader: str = "builtin",
    job: tuple[int, int] | None = None,
    threshold_channel: int = 1,
    compression: str = nexus.CODECS[0],
    strong_floor: float | None = DEFAULT_STRONG_FLOOR,
):
    """Stream the sweep's frames into an int32 image series, slab by slab (-1 = invalid).

    In the same pass every frame's valid pixels above ``strong_floor`` (raised per frame where
    more than STRONG_FRACTION of them lie above it) and its value histogram are listed in
    /entry/diffuseflow_strong (``io.strong``), which find_peaks reads instead of the stack
    (``strong_floor`` None: no list, e.g. for a background sweep).

    job = (k, n): slab job k of n writes only its own frames' chunks into the full-shape stack
    (a partial file, assembled by ``nexus.gather_partials``)."""
    frames = frame_reader(expt, untrusted, reader, threshold_channel)
    n = expt.scan.num_images
    ny, nx = expt.panel.shape
    chunks = resolve_chunks(expt, chunks)
    slabs = nexus.slab_bounds(n, chunks[0])
    if job is not None:
        first, last = nexus.job_frames(n, chunks[0], *job)
        slabs = [(a, b) for a, b in slabs if first <= a < last]
        log(f"slab job {job[0]} of {job[1]}: frames {first} to {last - 1}")
    if hasattr(frames, "describe"):
        log(frames.describe())
    log(f"Image data shape (phi, iy, ix): {(n, ny, nx)}")
    log(f"Chunks (phi, iy, ix): {chunks}; writing {len(slabs)} image batches")
    params = dict(
        parameters or {},
        chunks=list(chunks),
        untrusted=[f"{r.kind}={','.join(f'{v:g}' for v in r.values)}" for r in untrusted or []],
        reader=reader,
        threshold_channel=threshold_channel,
        compression=compression,
        strong_pixel_floor=strong_floor,
        experiment=expt.index,
        frames=list(expt.scan.image_range),
    )
    inputs = [expt.path]
    with nexus.atomic_output(outfile) as tmp, ThreadPoolExecutor(max(1, nproc)) as pool:
        with nexus.new_file(
            tmp, "import_data", params, inputs, nexus.sweep_record(expt), streamed=True
        ) as f:
            if job is not None:
                nexus.mark_partial(f, (first, last), job)
            # the resolved experiment travels with the data, so QC and later steps can compute
            # per-pixel geometry (e.g. resolution of a background sweep) without the .expt
            f["entry"].create_dataset(
                "diffuseflow_experiment", data=json.dumps(experiment_to_dict(expt))
            )
            g = nexus.image_series_group(
                f["entry"],
                expt.scan.frame_centres(),
                np.arange(ny),
                np.arange(nx),
                expt.scan.exposure_times,
            )
            dset = nexus.create_stack(
                g, "data", (n, ny, nx), np.int32, chunks, codec=compression, fill=-1
            )
            writer = nexus.StackWriter(dset, threads=nproc)
            listed = None
            if strong_floor is not None:
                listed = StrongPixelWriter(
                    f["entry"],
                    n,
                    nexus.slab_bounds(n, chunks[0]),
                    HIST_BINS,
                    {
                        "requested_floor": float(strong_floor),
                        "max_fraction": STRONG_FRACTION,
                        "histogram_stride": HIST_STRIDE,
                    },
                    compression,
                )
            # one slab buffer for the whole sweep: a fresh slab (up to 256 MB) per batch pays
            # its page faults again each time, ~40 % of an Eiger frame's read (the writer is
            # done with a slab when write returns)
            buffer = np.empty((chunks[0], ny, nx), np.int32)
            try:
                for start, stop in slabs:
                    slab = buffer[: stop - start]

                    def load(i, slab=slab, start=start):
                        frame = frames.read(i, out=slab[i - start])
                        if listed is None:
                            return None, frame.size - count_invalid(frame), None, None
                        # the strong-pixel search runs while the frame is in cache
                        return scan_frame_strong(frame, strong_floor)

                    scans = list(pool.map(load, range(start, stop)))
                    writer.write(start, slab)
                    invalid = slab.size - sum(s[1] for s in scans)
                    if listed is None:
                        log(f"frames {start} to {stop - 1}: {invalid} invalid px")
                        continue
                    hist = np.zeros(HIST_BINS, np.int64)
                    for i, (floor, n_valid, cols, frame_hist) in enumerate(scans, start):
                        listed.add_frame(i, floor, n_valid, *cols)
                        hist += frame_hist
                    listed.add_histogram(start, stop, hist)
                    n_strong = sum(len(s[2][0]) for s in scans)
                    log(
                        f"frames {start} to {stop - 1}: {invalid} invalid px, {n_strong} strong "
                        f"px (floor {max(s[0] for s in scans):g})"
                    )
                if listed is not None:
                    listed.close(dset)
            finally:
                writer.close()
    return chunks


def geometry_summary(expt: Experiment) -> str:
    g = SweepGeometry(expt)
    d_min, d_max = g.d_spacing_range()
    return (
        f"{expt.scan.num_images} frames of {expt.scan.phi_width:g} deg from "
        f"{expt.scan.phi_start:g} deg; detector {expt.panel.image_size[0]}x"
        f"{expt.panel.image_size[1]}; resolution {d_max:.1f}-{d_min:.2f} A"
    )
