"""correct: count rate -> background-subtracted, geometry-corrected intensity per observation.

As mdx2 1.0.5's ``correct``: rate = counts / seconds, minus the binned background rate at the
observation's (phi, iy, ix), divided by solid angle x polarisation x efficiency x attenuation
(each switchable); h, k, l mapped to the asymmetric unit of the Laue group (``op`` = index of
the Laue operator used); s = |UB h|; rs_volume = pixels x d3s / det(UB).

Physical mode (the default) differs where mdx2 is wrong or silent:

* corrections are evaluated exactly at the observation's mean pixel position (mdx2
  interpolates its 10-pixel grid);
* the background is interpolated from the non-empty bins only (mdx2 lets one empty, NaN bin
  spread to every observation near it); observations outside the background sweep's rotation
  range, or with no non-empty bin around them, are dropped and counted;
* the background's own standard error (``rate_error``) is propagated into intensity_error,
  and the table keeps what merge needs to weight by expected counts: seconds, background,
  background_error and the correction product;
* ``--p1`` maps by Friedel's law, (h, k, l) -> (-h, -k, -l) (mdx2 mirrors l only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import map_coordinates

from diffuseflow.algorithms.binning import BinnedBackground
from diffuseflow.errors import InputError
from diffuseflow.io.tables import HKLTable, hkl_from_voxels

CORRECTIONS = ("attenuation", "efficiency", "polarization")


# -- symmetry -----------------------------------------------------------------------------------


def crystal_form(geometry, p1: bool = False) -> dict:
    """What tables to be merged must share: the Laue group the asymmetric unit follows ("-1"
    with p1) and the unit cell (a, b, c in Å, angles in degrees, from the UB matrix)."""
    real = np.linalg.inv(np.asarray(geometry.ub_matrix, float))  # rows: a, b, c
    lengths = np.linalg.norm(real, axis=1)
    pairs = ((1, 2), (0, 2), (0, 1))
    angles = [
        np.degrees(np.arccos(real[i] @ real[j] / (lengths[i] * lengths[j]))) for i, j in pairs
    ]
    group = geometry.space_group()  # ours: a CrystalSymmetry; mdx2's files: a gemmi group
    group = getattr(group, "reference", group)
    return {
        "laue": "-1" if p1 else group.laue_str(),
        "cell": [round(float(v), 3) for v in (*lengths, *angles)],
    }


#: tables merge only if their cells agree this well (crystals of one form: ~1 %)
CELL_LENGTH_TOLERANCE = 0.03
CELL_ANGLE_TOLERANCE = 3.0  # degrees


def check_same_form(forms: dict[str, dict], consequence: str = "cannot merge"):
    """Refuse tables (by file name) of different Laue groups or unit cells, in one line."""
    named = [(name, f) for name, f in forms.items() if f]
    for name, form in named[1:]:
        first, ref = named[0]
        if form["laue"] != ref["laue"]:
            raise InputError(
                f"{name} (Laue group {form['laue']}) and {first} (Laue group {ref['laue']}) "
                f"are of different crystal forms and {consequence}"
            )
        a, b = np.asarray(form["cell"]), np.asarray(ref["cell"])
        if np.any(np.abs(a[:3] / b[:3] - 1) > CELL_LENGTH_TOLERANCE) or np.any(
            np.abs(a[3:] - b[3:]) > CELL_ANGLE_TOLERANCE
        ):
            raise InputError(
                f"{name} (cell {' '.join(f'{v:g}' for v in a)}) and {first} (cell "
                f"{' '.join(f'{v:g}' for v in b)}) are of different crystal forms and {consequence}"
            )


@dataclass
class LaueSymmetry:
    """Laue operators and the reciprocal ASU condition of geometry.nxs (ours or mdx2's)."""

    operators: np.ndarray  #: (m, 3, 3)
    asu: str  #: numexpr/numpy expression in h, k, l

    @classmethod
    def of(cls, geometry) -> LaueSymmetry:
        """From an importing.GeometryFile."""
        return cls(geometry.laue_operators, geometry.reciprocal_space_asu)

    def is_asu(self, H, K, L) -> np.ndarray:
        # the expression is numexpr syntax; with numpy integer arrays Python evaluates it alike
        env = {"h": H, "k": K, "l": L}
        out = eval(self.asu, {"__builtins__": {}}, env)  # noqa: S307 (our own geometry field)
        return np.broadcast_to(np.asarray(out, bool), np.shape(H))

    def to_asu(self, HKL: np.ndarray):
        """(n, 3) integer indices -> (ASU indices, op index), mdx2's rule: the lowest-numbered
        operator that maps into the ASU (operators apply as op.T @ hkl)."""
        out = np.empty_like(HKL)
        op = np.full(len(HKL), -1, np.int64)
        for n in reversed(range(len(self.operators))):
            m = np.rint(self.operators[n]).astype(np.int64)
            mapped = HKL @ m  # = (op.T @ hkl) for each row
            inside = self.is_asu(mapped[:, 0], mapped[:, 1], mapped[:, 2])
            op[inside] = n
            out[inside] = mapped[inside]
        if np.any(op < 0):
            raise InputError(
                f"{int(np.sum(op < 0))} indices map into no asymmetric unit with these operators "
                f"(ASU {self.asu!r}); is the geometry's symmetry group consistent?"
            )
        return out, op


def friedel_to_asu(HKL: np.ndarray, mdx2_compat: bool):
    """P1: mdx2 1.0.5 maps l < 0 to |l| (op 1), which is a mirror, not Friedel's law; the
    physical rule maps the half-space (l < 0, or l = 0 and k < 0, or l = k = 0 and h < 0) to
    (-h, -k, -l)."""
    H, K, L = HKL.T
    if mdx2_compat:
        op = (L < 0).astype(np.int64)
        return np.stack([H, K, np.abs(L)], 1), op
    neg = (L < 0) | ((L == 0) & ((K < 0) | ((K == 0) & (H < 0))))
    out = np.where(neg[:, None], -HKL, HKL)
    return out, neg.astype(np.int64)


FRIEDEL_OPERATORS = np.array([np.eye(3), -np.eye(3)])


# -- interpolation ------------------------------------------------------------------------------


def _fraction(x, axis):
    return np.interp(np.asarray(x, float), np.asarray(axis, float), np.arange(len(axis)))


def mdx2_interp(axes, values, *points) -> np.ndarray:
    """mdx2's interp2/interp3: clamped fractional index per axis, then linear
    map_coordinates (NaN spreads to every point whose cell touches it)."""
    coords = np.stack([_fraction(p, a) for p, a in zip(points, axes, strict=True)])
    return map_coordinates(values, coords, order=1)


def nan_aware_interp(axes, values, *points):
    """Multilinear interpolation that ignores NaN nodes: sum(w v) / sum(w) over the cell's
    non-NaN corners (the weight sum is returned too: 0 = no data around the point)."""
    frac = [_fraction(p, a) for p, a in zip(points, axes, strict=True)]
    base, wts = [], []
    for f, a in zip(frac, axes, strict=True):
        b = np.clip(np.floor(f).astype(np.int64), 0, max(len(a) - 2, 0))
        base.append(b)
        wts.append(f - b)
    ok = ~np.isnan(values)
    v0 = np.where(ok, values, 0.0)
    num = np.zeros(len(frac[0]))
    den = np.zeros(len(frac[0]))
    nd = len(axes)
    for corner in range(1 << nd):
        idx, w = [], np.ones(len(frac[0]))
        for d in range(nd):
            up = (corner >> d) & 1
            i = np.minimum(base[d] + up, values.shape[d] - 1)
            idx.append(i)
            w = w * (wts[d] if up else 1 - wts[d])
        w = w * ok[tuple(idx)]
        num += w * v0[tuple(idx)]
        den += w
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den, den


# -- background ---------------------------------------------------------------------------------


# -- corrections --------------------------------------------------------------------------------


@dataclass
class Settings:
    attenuation: bool = True
    efficiency: bool = True
    polarization: bool = True
    lorentz: bool = False
    p1: bool = False
    mdx2_compat: bool = False


def correct_table(
    table: HKLTable,
    ub: np.ndarray,
    laue: LaueSymmetry | None,
    corrections: dict[str, np.ndarray],
    background: BinnedBackground | None,
    settings: Settings,
    log=print,
) -> tuple[HKLTable, dict]:
    """The corrected table and a summary of what was dropped. ``corrections``: per-row
    solid_angle, attenuation, efficiency, polarization and d3s at the rows' (iy, ix)."""
    compat = settings.mdx2_compat
    cols = table.columns
    counts = cols["counts"].astype(float)
    seconds = cols["seconds"]
    hkl = np.stack([cols["h"], cols["k"], cols["l"]])
    s = np.sqrt(np.sum((ub @ hkl) ** 2, axis=0))
    HKL = table.voxels()
    if laue is None:
        asu, op = friedel_to_asu(HKL, compat)
    else:
        asu, op = laue.to_asu(HKL)
    rate = counts / seconds
    rate_error = np.sqrt(counts) / seconds
    keep = np.ones(len(table), bool)
    summary = {"observations": len(table)}
    bkg = bkg_err = None
    if background is not None:
        pts = (cols["phi"], cols["iy"], cols["ix"])
        axes = (background.phi, background.iy, background.ix)
        if compat:
            bkg = mdx2_interp(axes, background.rate, *pts)
        else:
            bkg, weight = nan_aware_interp(axes, background.rate, *pts)
            lo, hi = background.phi_range
            phi = cols["phi"].astype(float)
            outside = (phi < lo) | (phi > hi)
            empty = (weight == 0) & ~outside
            summary["outside_background_phi"] = int(outside.sum())
            summary["empty_background"] = int(empty.sum())
            keep &= ~outside & ~empty
            if background.error is not None:
                err2, _ = nan_aware_interp(axes, background.error**2, *pts)
                bkg_err = np.sqrt(err2)
            else:
                bkg_err = np.zeros(len(table))
                summary["background_error"] = "not in file (mdx2's binned file): taken as 0"
        rate = rate - bkg
    C = corrections["solid_angle"].copy()
    applied = []
    for name in CORRECTIONS:
        if getattr(settings, name):
            C *= corrections[name]
            applied.append(name)
    rs_volume = cols["pixels"] * corrections["d3s"] / np.linalg.det(ub)
    intensity = rate / C
    if compat or bkg_err is None:
        error = rate_error / C
    else:
        error = np.sqrt(rate_error**2 + bkg_err**2) / C
    if settings.lorentz:
        intensity = intensity * rs_volume
        error = error * rs_volume
    out = hkl_from_voxels(asu, table.ndiv)
    out.update(
        n=cols["n"].astype(np.int32),
        phi=cols["phi"],
        iy=cols["iy"],
        ix=cols["ix"],
        s=s.astype(np.float32),
        intensity=intensity.astype(np.float32),
        intensity_error=error.astype(np.float32),
        rs_volume=rs_volume.astype(np.float32),
        op=op.astype(np.int32),
    )
    if not compat:
        # what merge needs to weight by expected rather than observed counts
        lor = rs_volume if settings.lorentz else 1.0
        out.update(
            seconds=seconds.astype(np.float64),
            correction=(C / lor).astype(np.float64),
            background=(bkg if bkg is not None else np.zeros(len(table))).astype(np.float64),
            background_error=(bkg_err if bkg_err is not None else np.zeros(len(table))).astype(
                np.float64
            ),
        )
    summary["corrections"] = applied
    summary["kept"] = int(keep.sum())
    result = HKLTable(out, table.ndiv).select(keep)
    return result, summary
