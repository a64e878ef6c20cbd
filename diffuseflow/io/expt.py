"""Read DIALS experiment lists (``.expt`` JSON) without dxtbx.

Implements the format described in ``expt-geometry.md`` §1: current and legacy scan
encodings, ``ImageSequence``/``ImageSweep`` imagesets with templates relative to the ``.expt``
folder, detector hierarchies, single- and multi-axis goniometers, static and scan-varying
crystals, and the parallax parameters of the panel.

A file with one experiment is read as it is; in a file with several (sweeps, or several
lattices on one sweep) the caller names one (``index``), and without it gets one line listing
them. ``frames`` selects a run of images of the sweep (1-based, inclusive, as DIALS'
``image_range``) without editing the file. Everything returned is plain numpy; the
pixel -> Miller index mathematics lives in :mod:`diffuseflow.geometry`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from diffuseflow.errors import InputError


@dataclass(frozen=True)
class Beam:
    wavelength: float  #: Angstrom
    direction: np.ndarray  #: unit vector from the sample towards the source
    polarization_normal: np.ndarray
    polarization_fraction: float

    @property
    def s0(self) -> np.ndarray:
        """Incident beam vector, |s0| = 1/lambda, pointing from the source to the sample."""
        return -self.direction / self.wavelength


@dataclass(frozen=True)
class Panel:
    origin: np.ndarray  #: mm, outer corner of the first pixel (global frame)
    fast_axis: np.ndarray  #: unit vector (global frame)
    slow_axis: np.ndarray
    pixel_size: tuple[float, float]  #: (fast, slow) mm
    image_size: tuple[int, int]  #: (n_fast, n_slow)
    trusted_range: tuple[float, float]  #: inclusive
    thickness: float  #: mm
    mu: float  #: 1/mm
    parallax: bool  #: ParallaxCorrected strategy with mu > 0 and thickness > 0
    material: str
    sensor_type: str
    mask_rectangles: tuple[tuple[int, int, int, int], ...]  #: (f0, s0, f1, s1), end exclusive
    name: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        """Numpy shape of an image: (n_slow, n_fast)."""
        return (self.image_size[1], self.image_size[0])

    @property
    def normal(self) -> np.ndarray:
        """Unit normal pointing away from the sample."""
        n = np.cross(self.fast_axis, self.slow_axis)
        n /= np.linalg.norm(n)
        return -n if float(np.dot(self.origin, n)) < 0 else n


@dataclass(frozen=True)
class Goniometer:
    rotation_axis: np.ndarray  #: scan axis at the goniometer datum (before S)
    fixed_rotation: np.ndarray  #: F, 3x3
    setting_rotation: np.ndarray  #: S, 3x3


@dataclass(frozen=True)
class Scan:
    image_range: tuple[int, int]  #: first, last (1-based, inclusive)
    phi_start: float  #: degrees, start of the first image
    phi_width: float  #: degrees per image
    exposure_times: np.ndarray  #: seconds, one per image

    @property
    def num_images(self) -> int:
        return self.image_range[1] - self.image_range[0] + 1

    def frame_centres(self) -> np.ndarray:
        """Frame-centre rotation angles (degrees), as in mdx2's ``phi`` axis."""
        return self.phi_start + self.phi_width * (np.arange(self.num_images) + 0.5)


@dataclass(frozen=True)
class Crystal:
    A: np.ndarray  #: setting matrix U.B at the datum; columns a*, b*, c* (1/Angstrom)
    hall_symbol: str
    A_at_scan_points: np.ndarray | None = None  #: (num_images + 1, 3, 3) or None

    @property
    def real_space_matrix(self) -> np.ndarray:
        """Rows a, b, c (Angstrom) at the datum."""
        return np.linalg.inv(self.A)


@dataclass(frozen=True)
class ImageSource:
    """Where the images of a sweep are and how to find image n."""

    template: str  #: absolute path with '#' run (per-image files) or a single file
    single_file: bool
    mask_file: str | None = None
    #: single-file sweeps: frame index in the file of each image of the scan, in order
    file_indices: tuple[int, ...] | None = None

    def file_index(self, k: int) -> int:
        """0-based index in a single file of the k-th image (0-based) of the scan."""
        assert self.file_indices is not None
        return self.file_indices[k]

    def path_for(self, n: int) -> str:
        if self.single_file:
            return self.template
        run = re.search(r"#+", self.template)
        assert run is not None
        return (
            self.template[: run.start()]
            + str(n).zfill(run.end() - run.start())
            + self.template[run.end() :]
        )


@dataclass(frozen=True)
class Experiment:
    path: Path
    beam: Beam
    panel: Panel
    goniometer: Goniometer
    scan: Scan
    crystal: Crystal | None
    images: ImageSource | None
    n_panels: int = 1
    extra: dict = field(default_factory=dict)
    index: int = 0  #: which experiment of its file (0-based)


# ------------------------------------------------------------------------------------------
# helpers


class _Reader:
    """Keeps the file name so that every error message can name it."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, what: str) -> InputError:
        return InputError(f"{self.path}: {what}")

    def get(self, d: dict, key: str, where: str):
        if not isinstance(d, dict):
            raise self.fail(f"{where} is not a JSON object")
        if key not in d or d[key] is None:
            raise self.fail(f"{where} is missing key '{key}'")
        return d[key]

    def vec(self, d: dict, key: str, where: str, n: int = 3, default=None) -> np.ndarray:
        if default is not None and d.get(key) is None:
            return np.asarray(default, dtype=float)
        v = self.get(d, key, where)
        try:
            a = np.asarray(v, dtype=float)
        except (TypeError, ValueError):
            raise self.fail(f"{where}.{key} is not a list of numbers") from None
        if a.shape != (n,):
            raise self.fail(f"{where}.{key} must have {n} numbers, has {a.size}")
        return a

    def unit(self, d, key, where, default=None) -> np.ndarray:
        a = self.vec(d, key, where, 3, default)
        norm = np.linalg.norm(a)
        if norm == 0:
            raise self.fail(f"{where}.{key} is a zero vector")
        return a / norm

    def mat(self, d, key, where, default_identity=False) -> np.ndarray:
        if default_identity and d.get(key) is None:
            return np.eye(3)
        return self.vec(d, key, where, 9).reshape(3, 3)

    def model(self, doc: dict, kind: str, index, where: str):
        """Resolve a model reference: an index into doc[kind] or (legacy) a JSON file path."""
        if isinstance(index, str):
            p = Path(os.path.expandvars(os.path.expanduser(index)))
            if not p.is_absolute():
                p = self.path.parent / p
            try:
                return json.loads(p.read_text())
            except OSError as e:
                raise self.fail(f"{where}: cannot read {kind} file {p}: {e.strerror}") from None
            except json.JSONDecodeError as e:
                raise self.fail(f"{where}: {kind} file {p} is not valid JSON ({e})") from None
        models = doc.get(kind) or []
        if not isinstance(index, int) or not 0 <= index < len(models):
            raise self.fail(f"{where}: {kind} index {index!r} does not exist")
        return models[index]


def _rodrigues(axis: np.ndarray, angle_deg: float) -> np.ndarray:
    e = axis / np.linalg.norm(axis)
    a = np.deg2rad(angle_deg)
    K = np.array([[0, -e[2], e[1]], [e[2], 0, -e[0]], [-e[1], e[0], 0]])
    return np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * (K @ K)


# ------------------------------------------------------------------------------------------
# model readers


def _read_beam(r: _Reader, b: dict) -> Beam:
    where = "beam"
    if b.get("__id__") == "polychromatic":
        raise r.fail("polychromatic (ToF/Laue) beams are not supported")
    wl = float(r.get(b, "wavelength", where))
    if not wl > 0:
        raise r.fail(f"beam.wavelength must be > 0, is {wl}")
    return Beam(
        wavelength=wl,
        direction=r.unit(b, "direction", where),
        polarization_normal=r.unit(b, "polarization_normal", where, default=(0.0, 1.0, 0.0)),
        polarization_fraction=float(b.get("polarization_fraction", 0.999) or 0.999),
    )


def _compose_hierarchy(r: _Reader, det: dict) -> dict[int, tuple]:
    """Global (origin, fast, slow) of every panel, composing the hierarchy tree (§1.4)."""
    panels = det["panels"]
    result: dict[int, tuple] = {}
    root = det.get("hierarchy")
    if not root:
        return result

    def frame(node, where):
        o = r.vec(node, "origin", where, default=(0, 0, 0))
        f = r.vec(node, "fast_axis", where, default=(1, 0, 0))
        s = r.vec(node, "slow_axis", where, default=(0, 1, 0))
        return o, f / np.linalg.norm(f), s / np.linalg.norm(s)

    def walk(node, P, origin, where):
        if "panel" in node:
            i = node["panel"]
            if not isinstance(i, int) or not 0 <= i < len(panels):
                raise r.fail(f"{where}: panel index {i!r} does not exist")
            w = f"detector.panels[{i}]"
            o = r.vec(panels[i], "origin", w)
            f, s = r.unit(panels[i], "fast_axis", w), r.unit(panels[i], "slow_axis", w)
            result[i] = (P @ o + origin, P @ f, P @ s)
            return
        o, f, s = frame(node, where)
        g_f, g_s = P @ f, P @ s
        g_o = P @ o + origin
        n = np.cross(g_f, g_s)
        P_child = np.column_stack([g_f, g_s, n])
        for k, child in enumerate(node.get("children", [])):
            walk(child, P_child, g_o, f"{where}.children[{k}]")

    walk(root, np.eye(3), np.zeros(3), "detector.hierarchy")
    return result


def _read_panel(r: _Reader, det: dict) -> tuple[Panel, int]:
    panels = r.get(det, "panels", "detector")
    if not isinstance(panels, list) or not panels:
        raise r.fail("detector has no panels")
    if len(panels) > 1:
        raise r.fail(
            f"detector has {len(panels)} panels; only single-panel detectors are supported "
            "(multi-panel support is planned)"
        )
    p = panels[0]
    where = "detector.panels[0]"
    glob = _compose_hierarchy(r, det)
    if 0 in glob:
        origin, fast, slow = glob[0]
    else:
        origin = r.vec(p, "origin", where)
        fast, slow = r.unit(p, "fast_axis", where), r.unit(p, "slow_axis", where)
    px = r.vec(p, "pixel_size", where, 2)
    size = r.vec(p, "image_size", where, 2)
    if np.any(px <= 0) or np.any(size < 1):
        raise r.fail(f"{where}: pixel_size and image_size must be positive")
    tr = r.vec(p, "trusted_range", where, 2)
    strategy = p.get("px_mm_strategy") or {}
    stype = strategy.get("type", "SimplePxMmStrategy")
    mu = float(strategy.get("mu", p.get("mu", 0.0)) or 0.0)
    t0 = float(strategy.get("t0", p.get("thickness", 0.0)) or 0.0)
    parallax = "Parallax" in stype and mu > 0 and t0 > 0
    rects = []
    for k, m in enumerate(p.get("mask") or []):
        if len(m) != 4:
            raise r.fail(f"{where}.mask[{k}] must be [x0, y0, x1, y1]")
        rects.append(tuple(int(v) for v in m))
    return (
        Panel(
            origin=np.asarray(origin, float),
            fast_axis=np.asarray(fast, float),
            slow_axis=np.asarray(slow, float),
            pixel_size=(float(px[0]), float(px[1])),
            image_size=(int(size[0]), int(size[1])),
            trusted_range=(float(tr[0]), float(tr[1])),
            thickness=t0,
            mu=mu,
            parallax=parallax,
            material=str(p.get("material", "")),
            sensor_type=str(p.get("type", "")),
            mask_rectangles=tuple(rects),
            name=str(p.get("name", "")),
        ),
        len(panels),
    )


def _read_goniometer(r: _Reader, g: dict) -> Goniometer:
    where = "goniometer"
    if all(k in g for k in ("axes", "angles", "scan_axis")):
        axes = [np.asarray(a, float) for a in g["axes"]]
        angles = [float(a) for a in g["angles"]]
        k = int(g["scan_axis"])
        if len(axes) != len(angles) or not 0 <= k < len(axes):
            raise r.fail("goniometer: axes, angles and scan_axis do not agree")
        F = np.eye(3)
        for i in range(k):  # axes between the sample and the scan motor
            F = _rodrigues(axes[i], angles[i]) @ F
        S = np.eye(3)
        for i in range(k + 1, len(axes)):  # axes between the scan motor and the floor
            S = _rodrigues(axes[i], angles[i]) @ S
        return Goniometer(axes[k] / np.linalg.norm(axes[k]), F, S)
    if g.get("setting_rotation_at_scan_points"):
        raise r.fail("goniometer: scan-varying setting rotations are not supported yet")
    return Goniometer(
        rotation_axis=r.unit(g, "rotation_axis", where),
        fixed_rotation=r.mat(g, "fixed_rotation", where, default_identity=True),
        setting_rotation=r.mat(g, "setting_rotation", where, default_identity=True),
    )


def _read_scan(r: _Reader, s: dict) -> Scan:
    where = "scan"
    ir = r.get(s, "image_range", where)
    if not (isinstance(ir, list) and len(ir) == 2 and all(isinstance(v, int) for v in ir)):
        raise r.fail("scan.image_range must be [first, last]")
    if ir[1] < ir[0]:
        raise r.fail(f"scan.image_range {ir} is empty")
    n = ir[1] - ir[0] + 1
    if "properties" in s:  # dxtbx >= 3.18
        props = s["properties"]
        osc = np.asarray(r.get(props, "oscillation", "scan.properties"), float)
        if osc.size != n:
            raise r.fail(f"scan.properties.oscillation has {osc.size} values for {n} images")
        if n > 1:
            width = float(osc[1] - osc[0])
        else:
            width = float(r.get(props, "oscillation_width", "scan.properties")[0])
        start = float(osc[0])
        exposure = props.get("exposure_time")
    else:  # legacy encoding
        osc = r.vec(s, "oscillation", where, 2)
        start, width = float(osc[0]), float(osc[1])
        exposure = s.get("exposure_time")
    if exposure is None:
        raise r.fail("scan is missing key 'exposure_time'")
    exposure = np.atleast_1d(np.asarray(exposure, float))
    if exposure.size == 1:
        exposure = np.full(n, exposure[0])
    elif exposure.size != n:
        raise r.fail(f"scan exposure_time has {exposure.size} values for {n} images")
    # A CBF import quirk: only the first value set. mdx2 copies it to all frames; so do we.
    if exposure[0] > 0 and np.all(exposure[1:] == 0):
        exposure = np.full(n, exposure[0])
    if width <= 0:
        raise r.fail(f"scan oscillation width must be > 0 for a rotation sweep, is {width}")
    return Scan((ir[0], ir[1]), start, width, exposure)


def _read_crystal(r: _Reader, c: dict, n_images: int) -> Crystal:
    where = "crystal"
    M = np.vstack(
        [r.vec(c, key, where) for key in ("real_space_a", "real_space_b", "real_space_c")]
    )
    if abs(np.linalg.det(M)) < 1e-6:
        raise r.fail("crystal: real_space_a, b, c are linearly dependent")
    hall = str(r.get(c, "space_group_hall_symbol", where))
    A_sp = None
    if c.get("A_at_scan_points"):
        A_sp = np.asarray(c["A_at_scan_points"], float)
        if A_sp.ndim != 2 or A_sp.shape[1] != 9:
            raise r.fail("crystal.A_at_scan_points must be a list of 9-number matrices")
        A_sp = A_sp.reshape(-1, 3, 3)
        if A_sp.shape[0] != n_images + 1:
            raise r.fail(
                f"crystal.A_at_scan_points has {A_sp.shape[0]} matrices, expected "
                f"{n_images + 1} (one per image boundary)"
            )
    return Crystal(A=np.linalg.inv(M), hall_symbol=hall, A_at_scan_points=A_sp)


_SINGLE_FILE_EXT = (".h5", ".nxs", ".hdf5", ".nx5")


def _read_imageset(r: _Reader, iset: dict, scan: Scan) -> ImageSource:
    kind = iset.get("__id__")
    if kind not in ("ImageSequence", "ImageSweep"):
        raise r.fail(
            f"imageset type {kind!r} is not a rotation sweep (ImageSequence/ImageSweep needed)"
        )
    template = str(r.get(iset, "template", "imageset"))
    t = Path(os.path.expandvars(os.path.expanduser(template)))
    if not t.is_absolute():
        t = (r.path.parent / t).resolve()
    single = bool(iset.get("single_file_indices")) or str(t).lower().endswith(_SINGLE_FILE_EXT)
    if not single and "#" not in t.name:
        raise r.fail(f"imageset template {template!r} has no '#' run for the image number")
    mask = iset.get("mask")
    if mask:
        mp = Path(os.path.expandvars(os.path.expanduser(mask)))
        mask = str(mp if mp.is_absolute() else (r.path.parent / mp).resolve())
    indices = None
    if single:
        indices = _single_file_indices(r, iset.get("single_file_indices"), scan)
    return ImageSource(
        template=str(t), single_file=single, mask_file=mask or None, file_indices=indices
    )


def _single_file_indices(r: _Reader, given, scan: Scan) -> tuple[int, ...]:
    """Frame index in the file of each image of the scan. DIALS lists them in
    ``single_file_indices``, one per image of the scan; without them image n is frame n - 1."""
    i0, i1 = scan.image_range
    default = tuple(range(i0 - 1, i1))
    if not given:
        return default
    try:
        idx = tuple(int(v) for v in given)
    except (TypeError, ValueError):
        raise r.fail("imageset.single_file_indices is not a list of integers") from None
    if len(idx) == scan.num_images:
        if min(idx) < 0:
            raise r.fail("imageset.single_file_indices has a negative index")
        return idx
    if set(default) <= set(idx):  # the whole file listed, the scan a part of it
        return default
    raise r.fail(
        f"imageset.single_file_indices has {len(idx)} entries, which do not cover the scan's "
        f"images {i0}-{i1}"
    )


def read_expt(
    path: str | os.PathLike, index: int | None = None, frames: tuple[int, int] | None = None
) -> Experiment:
    """Read one experiment of a DIALS ``.expt`` file: ``index`` (0-based; needed when the file
    holds several), restricted to images ``frames`` = (first, last) if given."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not valid JSON (a binary file, not a DIALS .expt)") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    return experiment_from_text(text, path, index, frames)


def _describe(r: _Reader, doc: dict, k: int, e: dict) -> str:
    """'K: <template> images A-B, crystal C (<Hall>)' for the multi-experiment listing."""
    parts = [f"{k}:"]
    try:
        iset = r.model(doc, "imageset", e["imageset"], "") if e.get("imageset") is not None else {}
        parts.append(Path(str(iset.get("template", "no images"))).name)
    except InputError:
        parts.append("?")
    try:
        scan = r.model(doc, "scan", e["scan"], "") if e.get("scan") is not None else None
        if scan:
            ir = scan.get("image_range", ["?", "?"])
            parts.append(f"images {ir[0]}-{ir[1]}")
        else:
            parts.append("no scan (still)")
    except InputError:
        pass
    if e.get("crystal") is not None:
        try:
            c = r.model(doc, "crystal", e["crystal"], "")
            hall = str(c.get("space_group_hall_symbol", "")).strip()
            parts.append(f"crystal {e['crystal']} ({hall})")
        except InputError:
            pass
    else:
        parts.append("no crystal")
    return " ".join(parts)


def _is_rotation_sweep(e: dict) -> bool:
    return all(e.get(k) is not None for k in ("goniometer", "scan"))


def experiment_from_text(
    text: str,
    path: str | os.PathLike,
    index: int | None = None,
    frames: tuple[int, int] | None = None,
) -> Experiment:
    """Parse .expt JSON text; ``path`` names it in errors and anchors relative templates."""
    path = Path(path)
    r = _Reader(path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(doc, dict) or doc.get("__id__") != "ExperimentList":
        raise r.fail("not a DIALS experiment list (__id__ != 'ExperimentList')")
    exps = doc.get("experiment") or []
    if not exps:
        raise r.fail("contains no experiments")
    if index is None:
        if len(exps) > 1:
            if not any(isinstance(e, dict) and _is_rotation_sweep(e) for e in exps):
                raise r.fail(
                    f"holds {len(exps)} experiments and none is a rotation sweep (stills or "
                    "serial data are not supported)"
                )
            listing = "; ".join(_describe(r, doc, k, e) for k, e in enumerate(exps))
            raise r.fail(
                f"holds {len(exps)} experiments, choose one with `experiment: N` in the config "
                f"(--experiment N): {listing}"
            )
        index = 0
    if not 0 <= index < len(exps):
        raise r.fail(f"has {len(exps)} experiments, no experiment {index} (0-based)")
    e = exps[index]
    where = f"experiment[{index}]"
    for key in ("beam", "detector", "goniometer", "scan"):
        if e.get(key) is None:
            raise r.fail(f"{where} has no {key} (a rotation sweep needs one)")
    beam = _read_beam(r, r.model(doc, "beam", e["beam"], where))
    panel, n_panels = _read_panel(r, r.model(doc, "detector", e["detector"], where))
    gonio = _read_goniometer(r, r.model(doc, "goniometer", e["goniometer"], where))
    scan = _read_scan(r, r.model(doc, "scan", e["scan"], where))
    crystal = None
    if e.get("crystal") is not None:
        crystal = _read_crystal(r, r.model(doc, "crystal", e["crystal"], where), scan.num_images)
    images = None
    if e.get("imageset") is not None:
        images = _read_imageset(r, r.model(doc, "imageset", e["imageset"], where), scan)
    expt = Experiment(path, beam, panel, gonio, scan, crystal, images, n_panels, index=index)
    return select_frames(expt, frames) if frames is not None else expt


def select_frames(expt: Experiment, frames: tuple[int, int]) -> Experiment:
    """The same sweep restricted to images first..last (1-based, inclusive, DIALS numbering):
    scan start, exposures, scan-varying crystal and single-file indices follow."""
    first, last = (int(v) for v in frames)
    i0, i1 = expt.scan.image_range
    if not (i0 <= first <= last <= i1):
        raise InputError(
            f"{expt.path}: frames [{first}, {last}] must lie within the scan's images "
            f"[{i0}, {i1}] with first <= last"
        )
    a, b = first - i0, last - i0 + 1  # positions in the scan
    s = expt.scan
    scan = Scan(
        (first, last), s.phi_start + a * s.phi_width, s.phi_width, s.exposure_times[a:b].copy()
    )
    crystal = expt.crystal
    if crystal is not None and crystal.A_at_scan_points is not None:
        crystal = replace(crystal, A_at_scan_points=crystal.A_at_scan_points[a : b + 1].copy())
    images = expt.images
    if images is not None and images.file_indices is not None:
        images = replace(images, file_indices=images.file_indices[a:b])
    return replace(expt, scan=scan, crystal=crystal, images=images)


def experiment_to_dict(e: Experiment) -> dict:
    """A self-contained ExperimentList dict of the resolved experiment (global panel frame,
    legacy scan encoding, absolute template), stored in geometry.nxs so that later steps can
    recompute exact geometry without the original .expt and its side files."""
    p, g, s, b = e.panel, e.goniometer, e.scan, e.beam
    doc = {
        "__id__": "ExperimentList",
        "experiment": [
            {"__id__": "Experiment", "beam": 0, "detector": 0, "goniometer": 0, "scan": 0}
        ],
        "beam": [
            {
                "direction": b.direction.tolist(),
                "wavelength": b.wavelength,
                "polarization_normal": b.polarization_normal.tolist(),
                "polarization_fraction": b.polarization_fraction,
            }
        ],
        "detector": [
            {
                "panels": [
                    {
                        "name": p.name,
                        "type": p.sensor_type,
                        "origin": p.origin.tolist(),
                        "fast_axis": p.fast_axis.tolist(),
                        "slow_axis": p.slow_axis.tolist(),
                        "pixel_size": list(p.pixel_size),
                        "image_size": list(p.image_size),
                        "trusted_range": list(p.trusted_range),
                        "thickness": p.thickness,
                        "material": p.material,
                        "mu": p.mu,
                        "mask": [list(r) for r in p.mask_rectangles],
                        "px_mm_strategy": {
                            "type": "ParallaxCorrectedPxMmStrategy"
                            if p.parallax
                            else "SimplePxMmStrategy"
                        },
                    }
                ]
            }
        ],
        "goniometer": [
            {
                "rotation_axis": g.rotation_axis.tolist(),
                "fixed_rotation": g.fixed_rotation.ravel().tolist(),
                "setting_rotation": g.setting_rotation.ravel().tolist(),
            }
        ],
        "scan": [
            {
                "image_range": list(s.image_range),
                "oscillation": [s.phi_start, s.phi_width],
                "exposure_time": s.exposure_times.tolist(),
            }
        ],
    }
    if e.crystal is not None:
        M = e.crystal.real_space_matrix
        c = {
            "__id__": "crystal",
            "real_space_a": M[0].tolist(),
            "real_space_b": M[1].tolist(),
            "real_space_c": M[2].tolist(),
            "space_group_hall_symbol": e.crystal.hall_symbol,
        }
        if e.crystal.A_at_scan_points is not None:
            c["A_at_scan_points"] = e.crystal.A_at_scan_points.reshape(-1, 9).tolist()
        doc["crystal"] = [c]
        doc["experiment"][0]["crystal"] = 0
    if e.images is not None:
        iset = {"__id__": "ImageSequence", "template": e.images.template}
        if e.images.single_file:
            iset["single_file_indices"] = list(e.images.file_indices)
        if e.images.mask_file:
            iset["mask"] = e.images.mask_file
        doc["imageset"] = [iset]
        doc["experiment"][0]["imageset"] = 0
    return doc
