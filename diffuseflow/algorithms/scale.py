"""scale: the mdx2 1.0.5 scaling model, fitted to the corrected observations of one or more
sweeps against their merged intensities.

An observation of voxel v in sweep j is modelled as

    I_obs = a_j(x, y, phi) * b_j(phi) * d(x, y) * I_v  +  a_j * d * c_j(s, phi)

b ("scaling": beam intensity, illuminated volume) per degree; c ("offset": a smooth additive
residue of the background) over s = 1/d and phi; d ("detector": response across the panel,
one for all sweeps); a ("absorption") over the panel and phi. Each factor is piecewise linear on
its own grid of control points, with a smoothness penalty whose weight is ``alpha`` times
trace(A^T A) / trace(B^T B) (A the data's design matrix, B the penalty's). The factors are
refined one after the other, each against the merge of the observations under the current
model (alternating least squares), in mdx2's order: b; b with c; c; d; a; each stage ends by
rejecting outliers. Grids, penalties, weights, stopping rule and order are mdx2's
(``mdx2.scaling``, ``mdx2.command_line.scale``), so that a scales.nxs of either program is read
by the other's merge.

``mdx2_compat`` repeats mdx2 to the letter: each observation weighted by its own error
(``intensity_error``, from its own counts), mdx2's merge inside the loop, outliers rejected only
below the prediction, linear systems solved by LSQR with its default tolerances. Physical mode
(the default) differs where mdx2 is biased or loose, exactly as our merge does: weights from
the counts *expected* from the current prediction (observed-count weights favour observations
that fluctuated low, which pulls b down where counts are few), the expected-count merge,
outliers on both sides, exact sparse solves, and the overall level fixed at the end so that
the mean of a*b*d over the observations is 1 (the merged map keeps the corrected data's units).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.sparse import linalg as splinalg

from diffuseflow.algorithms import merge as merging
from diffuseflow.errors import InputError


@dataclass
class FactorSettings:
    """One factor's switches and refinement settings; defaults are mdx2 1.0.5's."""

    enable: bool
    niter: int
    x2tol: float
    outlier: float
    alpha: float = 1.0  #: smoothness (scaling, detector)
    dphi: float = 1.0  #: control-point spacing in phi, degrees (scaling, offset, absorption)
    nx: int = 20  #: control points across the panel's fast axis (detector, absorption)
    ny: int = 20  #: ... and its slow axis
    ns: int = 31  #: control points in s (offset)
    alpha_x: float = 1.0  #: offset: smoothness along s
    alpha_y: float = 1.0  #: offset: smoothness along phi
    alpha_min: float = 0.001  #: offset: pull towards ``min``
    min: float = 0.0  #: offset: lowest value
    alpha_xy: float = 10.0  #: absorption: smoothness across the panel
    alpha_z: float = 1.0  #: absorption: smoothness along phi


#: the factors, in the order mdx2 refines them when all are enabled
KINDS = ("scaling", "offset", "detector", "absorption")


def default_settings() -> dict[str, FactorSettings]:
    return {
        "scaling": FactorSettings(True, niter=10, x2tol=1e-4, outlier=10.0, alpha=1.0, dphi=1.0),
        "offset": FactorSettings(False, niter=5, x2tol=1e-3, outlier=5.0, dphi=2.5, ns=31),
        "detector": FactorSettings(False, niter=5, x2tol=1e-3, outlier=5.0, nx=200, ny=200),
        "absorption": FactorSettings(False, niter=5, x2tol=1e-4, outlier=5.0, dphi=5.0),
    }


# -- piecewise-linear grids --------------------------------------------------------------------


def control_points(x, dx=None, n=None, integer_limits=True) -> np.ndarray:
    """mdx2's ``_calc_points``: from min to max of x (floored/ceiled to integers), spaced dx
    or n points."""
    # in the coordinate's own precision, as mdx2 (float32 columns give float32 grids)
    lo, hi = np.min(x), np.max(x)
    if integer_limits:
        lo, hi = np.floor(lo), np.ceil(hi)
    if n is None:
        n = int(np.round((hi - lo) / dx)) + 1
    if hi <= lo:  # all data at one value (mdx2 fails here): a grid of one unit around it
        lo, hi = lo - 0.5, lo + 0.5
    return np.linspace(lo, hi, max(n, 2)).astype(np.float64)


def _axis_weights(x, w, inside_only: bool):
    """Bin index and fraction of x on the control points w (mdx2's InterpLin*._map)."""
    n = w.size
    f = np.interp(x, w, np.arange(n, dtype=float))
    b = np.floor(f).astype(np.int64)
    b[b >= n - 1] = max(n - 2, 0)
    frac = f - b
    inside = (x >= w[0]) & (x <= w[-1]) if inside_only else np.ones(len(x), bool)
    return b, frac, inside


def interp_weights(points: list[np.ndarray], axes: list[np.ndarray]):
    """Multilinear interpolation of the points on the grid, as (columns, weights), each of
    shape (n points, 2^dims): a grid point's column counts the first axis fastest (mdx2's
    Fortran order). Points outside the grid get weight 0."""
    n = len(points[0])
    shape = [len(w) for w in axes]
    per_axis = [
        _axis_weights(np.asarray(x, float), w, True) for x, w in zip(points, axes, strict=True)
    ]
    inside = np.logical_and.reduce([p[2] for p in per_axis])
    corners = list(np.ndindex(*(2,) * len(axes)))
    cols = np.zeros((n, len(corners)), np.int64)
    vals = np.zeros((n, len(corners)))
    for i, corner in enumerate(corners):
        wgt = inside.astype(float)
        stride = 1
        for (b, f, _), c, size in zip(per_axis, corner, shape, strict=True):
            wgt = wgt * (f if c else 1.0 - f)
            cols[:, i] += np.minimum(b + c, size - 1) * stride
            stride *= size
        vals[:, i] = wgt
    return cols, vals


def interp_matrix(points: list[np.ndarray], axes: list[np.ndarray]) -> sparse.csr_matrix:
    """(n points, prod grid) matrix of multilinear interpolation weights (interp_weights)."""
    cols, vals = interp_weights(points, axes)
    n, k = cols.shape
    rows = np.repeat(np.arange(n), k)
    A = sparse.csr_matrix(
        (vals.ravel(), (rows, cols.ravel())), shape=(n, int(np.prod([len(w) for w in axes])))
    )
    A.eliminate_zeros()
    return A


def _flat_index(shape):
    return np.arange(int(np.prod(shape))).reshape(shape, order="F")


def second_difference(shape, axis: int) -> sparse.csr_matrix:
    """Rows u[i-1]*-0.5 + u[i] - u[i+1]*0.5 along ``axis`` (mdx2's Bx, By, Bz, B of 1-D)."""
    ind = _flat_index(shape)
    if shape[axis] < 3:
        return sparse.csr_matrix((0, ind.size))
    left = np.take(ind, np.arange(0, shape[axis] - 2), axis=axis).ravel(order="F")
    mid = np.take(ind, np.arange(1, shape[axis] - 1), axis=axis).ravel(order="F")
    right = np.take(ind, np.arange(2, shape[axis]), axis=axis).ravel(order="F")
    r = np.arange(len(mid))
    return sparse.csr_matrix(
        (
            np.concatenate([np.full(len(r), -0.5), np.ones(len(r)), np.full(len(r), -0.5)]),
            (np.concatenate([r, r, r]), np.concatenate([left, mid, right])),
        ),
        shape=(len(r), ind.size),
    )


def neighbour_difference(shape, axes) -> sparse.csr_matrix:
    """u minus the mean of its grid neighbours along ``axes`` (mdx2's 2-D B and 3-D Bxy)."""
    ind = _flat_index(shape)
    rows, cols = [], []
    for ax in axes:
        lo = np.take(ind, np.arange(0, shape[ax] - 1), axis=ax).ravel(order="F")
        hi = np.take(ind, np.arange(1, shape[ax]), axis=ax).ravel(order="F")
        rows += [lo, hi]
        cols += [hi, lo]
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    L = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(ind.size, ind.size))
    nn = np.asarray(L.sum(axis=1)).ravel()
    with np.errstate(divide="ignore"):
        inv = np.where(nn > 0, 1.0 / nn, 0.0)
    return (sparse.eye(ind.size) - sparse.diags(inv) @ L).tocsr()


# -- the factors ---------------------------------------------------------------------------------


@dataclass
class Factor:
    """One fitted factor: its kind, control-point axes and values (None = not yet fitted:
    1 for a scale, 0 for the offset)."""

    kind: str
    axes: dict[str, np.ndarray]
    u: np.ndarray | None = None  #: values in Fortran order, flattened

    @property
    def shape(self):
        return tuple(len(a) for a in self.axes.values())

    @property
    def u_size(self) -> int:
        return int(np.prod(self.shape))

    def grid(self) -> np.ndarray:
        """u on its grid, shape ``self.shape`` (what scales.nxs stores)."""
        return self.u.reshape(self.shape, order="F")

    @classmethod
    def from_grid(cls, kind, axes, grid):
        return cls(kind, dict(axes), np.asarray(grid, np.float64).ravel(order="F"))

    def matrix(self, coords: dict[str, np.ndarray]) -> sparse.csr_matrix:
        return interp_matrix([coords[a] for a in self.axes], list(self.axes.values()))

    def values(self, coords: dict[str, np.ndarray]) -> np.ndarray:
        n = len(next(iter(coords.values())))
        if self.u is None:
            return np.full(n, 0.0 if self.kind == "offset" else 1.0)
        return self.matrix(coords) @ self.u

    def penalties(self, s: FactorSettings) -> list[tuple[float, sparse.csr_matrix]]:
        """(alpha multiplier, penalty matrix) pairs of this kind, as mdx2 regularises it."""
        shape = self.shape
        if self.kind == "scaling":
            return [(s.alpha, second_difference(shape, 0))]
        if self.kind == "offset":
            return [
                (s.alpha_x, second_difference(shape, 0)),
                (s.alpha_y, second_difference(shape, 1)),
            ]
        if self.kind == "detector":
            return [(s.alpha, neighbour_difference(shape, (0, 1)))]
        return [
            (s.alpha_xy, neighbour_difference(shape, (0, 1))),
            (s.alpha_z, second_difference(shape, 2)),
        ]


def new_factor(kind: str, coords: dict[str, np.ndarray], s: FactorSettings) -> Factor:
    """A factor's grid spanning the coordinates (mdx2's add_model defaults)."""
    if kind == "scaling":
        axes = {"phi": control_points(coords["phi"], dx=s.dphi)}
    elif kind == "offset":
        axes = {
            "s": control_points(coords["s"], n=s.ns, integer_limits=False),
            "phi": control_points(coords["phi"], dx=s.dphi),
        }
    elif kind == "detector":
        axes = {
            "ix": control_points(coords["ix"], n=s.nx),
            "iy": control_points(coords["iy"], n=s.ny),
        }
    else:
        axes = {
            "ix": control_points(coords["ix"], n=s.nx),
            "iy": control_points(coords["iy"], n=s.ny),
            "phi": control_points(coords["phi"], dx=s.dphi),
        }
    return Factor(kind, axes)


@dataclass
class Scales:
    """The factors of every sweep (batch); the detector factor is shared by all sweeps."""

    batches: list[dict[str, Factor]]  #: per sweep: kind -> Factor
    summary: dict = field(default_factory=dict)


def scale_offset(obs: merging.Observations, coords, batches: list[dict[str, Factor]], use=KINDS):
    """Per observation: g = a*b*d and o = c/b (so that I_obs = g (I + o)) from each sweep's
    factors; a factor not in ``use`` or not given is 1 (c: 0)."""
    g = np.ones(len(obs.ih))
    o = np.zeros(len(obs.ih))
    for j, factors in enumerate(batches):
        rows = np.flatnonzero(obs.batch == j)
        c = {k: v[rows] for k, v in coords.items()}
        val = {k: f.values(c) for k, f in factors.items() if k in use}
        b = val.get("scaling", 1.0)
        g[rows] = val.get("absorption", 1.0) * b * val.get("detector", 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            o[rows] = val.get("offset", 0.0) / b
    return g, o


def apply_factors(obs, coords, files: list[dict], use=KINDS) -> merging.Observations:
    """The observations with the factors read from scales.nxs files ({kind: (axes, grid)},
    one per sweep) divided out (see :func:`apply_scales`)."""
    batches = [{k: Factor.from_grid(k, *v) for k, v in f.items()} for f in files]
    g, o = scale_offset(obs, coords, batches, use)
    return apply_scales(obs, g, o)


def observation_coordinates(tables_, names) -> dict[str, np.ndarray]:
    """phi, ix, iy, s of every observation of the gathered tables, in the tables' dtype."""
    out = {}
    for c in ("phi", "ix", "iy", "s"):
        missing = [n for t, n in zip(tables_, names, strict=True) if c not in t]
        if missing:
            raise InputError(f"{missing[0]}: hkl_table has no {c!r} column; is this corrected.nxs?")
        out[c] = np.concatenate([t[c] for t in tables_])  # as stored: grids follow mdx2
    return out


def apply_scales(obs: merging.Observations, g: np.ndarray, o: np.ndarray) -> merging.Observations:
    """The observations with the model divided out: I/g - o, error/g. For the expected-count
    merge, the model columns follow: counts expected = t (C g (I + o) + B), so C -> C g and
    B -> B + o C g."""
    with np.errstate(divide="ignore", invalid="ignore"):
        intensity = obs.intensity / g - o
        error = obs.error / g
    model = None
    if obs.model is not None:
        model = dict(obs.model)
        model["correction"] = obs.model["correction"] * g
        model["background"] = obs.model["background"] + o * model["correction"]
    return dataclasses.replace(obs, intensity=intensity, error=error, model=model)


def _project(cols, vals, x, npar) -> np.ndarray:
    """A^T x for the interpolation matrix A given as (columns, weights) per row."""
    return np.bincount(cols.ravel(), (vals * x[:, None]).ravel(), npar)


def _gram(cols, vals, w, npar) -> sparse.csr_matrix:
    """A^T diag(w) A for A given as (columns, weights) per row: every pair of a row's
    columns, summed (a dense bincount when the parameters are few)."""
    k = cols.shape[1]
    if npar * npar <= 4_000_000:
        flat = np.zeros(npar * npar)
        for i in range(k):
            for j in range(k):
                flat += np.bincount(cols[:, i] * npar + cols[:, j], w * vals[:, i] * vals[:, j],
                                    npar * npar)  # fmt: skip
        return sparse.csr_matrix(flat.reshape(npar, npar))
    n = len(cols)
    A = sparse.csr_matrix((vals.ravel(), cols.ravel(), np.arange(0, n * k + 1, k)), shape=(n, npar))
    return (A.T @ sparse.diags(w) @ A).tocsr()


def solve(K, rhs) -> np.ndarray:
    """K x = rhs by sparse LU; where K is singular (a parameter no datum and no penalty
    reaches, e.g. a sweep of one degree), the least-squares solution instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", splinalg.MatrixRankWarning)
        try:
            x = splinalg.spsolve(K, rhs)
        except (RuntimeError, splinalg.MatrixRankWarning):
            x = np.full(len(rhs), np.nan)
    if not np.all(np.isfinite(x)):
        x = splinalg.lsqr(K, rhs, atol=1e-12, btol=1e-12)[0]
    return x


# -- refinement ------------------------------------------------------------------------------------


class Refiner:
    """Alternating least squares of the factors against the merged intensities."""

    def __init__(
        self, obs, coords, settings: dict[str, FactorSettings], mdx2_compat=False, log=print
    ):
        self.obs = obs
        self.coords = coords
        self.settings = settings
        self.compat = mdx2_compat
        self.physical = not mdx2_compat and obs.model is not None
        if not mdx2_compat and obs.model is None:
            log(
                "the corrected tables lack seconds/correction/background columns (mdx2's?): "
                "weighting with each observation's own errors, as mdx2"
            )
        self.log = log
        n = len(obs.ih)
        self.nbatch = int(obs.batch.max()) + 1 if n else 0
        self.rows = [np.flatnonzero(obs.batch == j) for j in range(self.nbatch)]
        # excluded from the fit and the merge: what mdx2's ScaledData masks, then singletons
        bad = ~np.isfinite(obs.intensity) | ~np.isfinite(obs.error) | (obs.error == 0)
        if self.physical:
            md = obs.model
            bad |= ~(md["seconds"] > 0) | ~(md["correction"] > 0) | ~np.isfinite(md["background"])
        self.excluded = bad
        m = len(obs.voxels)
        counts = np.bincount(obs.ih, weights=~self.excluded, minlength=m)
        singleton = (counts <= 1)[obs.ih] & ~self.excluded
        self.excluded = self.excluded | singleton
        self.summary = {
            "observations": n,
            "singletons": int(singleton.sum()),
            "outliers": {},
            "x2": {},
        }
        self.batches: list[dict[str, Factor]] = [{} for _ in range(self.nbatch)]
        self.detector: Factor | None = None
        self._matrices: dict = {}
        self._excluded_version = 0
        self.variance_scale = 1.0

    # ---- model values

    def add_factors(self):
        for kind in ("scaling", "offset", "absorption"):
            if self.settings[kind].enable:
                for j, rows in enumerate(self.rows):
                    keep = rows[~self.excluded[rows]]
                    self.batches[j][kind] = new_factor(kind, self._sub(keep), self.settings[kind])
        if self.settings["detector"].enable:
            keep = np.flatnonzero(~self.excluded)
            self.detector = new_factor("detector", self._sub(keep), self.settings["detector"])
            for b in self.batches:
                b["detector"] = self.detector

    def _sub(self, rows):
        return {k: v[rows] for k, v in self.coords.items()}

    def _matrix(self, j, kind):
        """Interpolation matrix of factor ``kind`` on batch j's rows (all of them; rows of
        excluded observations are dropped at use). Built once: grids do not move."""
        key = (j, kind)
        if key not in self._matrices:
            f = self.batches[j][kind]
            self._matrices[key] = f.matrix(self._sub(self.rows[j]))
        return self._matrices[key]

    def _ell(self, kind):
        """(columns, weights) of factor ``kind`` at every observation, the columns numbering
        the parameters of all sweeps' factors (sweep after sweep; the detector's once)."""
        key = ("ell", kind)
        if key not in self._matrices:
            if kind == "detector":
                ax = self.detector.axes
                pts = [self.coords[a] for a in ax]
                self._matrices[key] = interp_weights(pts, list(ax.values()))
            else:
                n = len(self.obs.ih)
                cols = vals = None
                offset = 0
                for j, rows in enumerate(self.rows):
                    f = self.batches[j][kind]
                    pts = [self.coords[a][rows] for a in f.axes]
                    c, v = interp_weights(pts, list(f.axes.values()))
                    if cols is None:
                        cols = np.zeros((n, c.shape[1]), np.int64)
                        vals = np.zeros((n, c.shape[1]))
                    cols[rows], vals[rows] = c + offset, v
                    offset += f.u_size
                self._matrices[key] = (cols, vals)
        return self._matrices[key]

    def _params(self, kind) -> np.ndarray:
        """The parameters of all sweeps' factors of ``kind``, concatenated (_ell's columns)."""
        fill = 0.0 if kind == "offset" else 1.0
        return np.concatenate(
            [f.u if f.u is not None else np.full(f.u_size, fill) for f in self._factors_of(kind)]
        )

    def factor_values(self, kind) -> np.ndarray:
        """The factor at every observation (1, or 0 for the offset, where not modelled)."""
        if (
            kind == "detector"
            and self.detector is None
            or kind != "detector"
            and not any(kind in b for b in self.batches)
        ):
            return np.full(len(self.obs.ih), 0.0 if kind == "offset" else 1.0)
        cols, vals = self._ell(kind)
        return np.einsum("ij,ij->i", vals, self._params(kind)[cols])

    def model(self):
        a, b, c, d = (
            self.factor_values(k) for k in ("absorption", "scaling", "offset", "detector")
        )
        return a, b, c, d

    # ---- merge and errors

    def merge(self, a, b, c, d):
        """Merged intensity per voxel under the current model."""
        with np.errstate(divide="ignore", invalid="ignore"):
            scaled = apply_scales(self.obs, a * b * d, c / b)
        use = ~self.excluded
        if self.physical:
            return self._merge_expected(a * b * d, c / b)
        else:
            im, _, count, _ = merging.merge_mdx2(scaled, use)
        return im, count

    def _used(self):
        """Rows in use and their model columns (kept until outliers change them)."""
        key = ("used rows", self._excluded_version)
        if key not in self._matrices:
            for old in [k for k in self._matrices if k[0] == "used rows"]:
                del self._matrices[old]
            rows = np.flatnonzero(~self.excluded)
            md = self.obs.model
            cols = {k: md[k][rows].astype(np.float64) for k in merging.MODEL_COLUMNS}
            cols["intensity"] = self.obs.intensity[rows].astype(np.float64)
            self._matrices[key] = (rows, self.obs.ih[rows], cols)
        return self._matrices[key]

    def _merge_expected(self, g, o):
        """merge.merge_expected with one reweighting (the joint steps refine the merged
        values themselves), on the rows in use only: the same numbers, a third of the time."""
        rows, ih, col = self._used()
        m = len(self.obs.voxels)
        t, g, o = col["seconds"], g[rows], o[rows]
        C = col["correction"] * g
        B = col["background"] + o * C
        intensity = col["intensity"] / g - o
        count = np.bincount(ih, minlength=m)
        with np.errstate(invalid="ignore", divide="ignore"):
            im = np.bincount(ih, t * C * intensity, m) / np.bincount(ih, t * C, m)
            poisson, bkg = merging.expected_variance(
                np.nan_to_num(im[ih]), t, C, B, col["background_error"], self.variance_scale
            )
            w = 1.0 / (poisson + bkg)
            im = np.bincount(ih, w * intensity, m) / np.bincount(ih, w, m)
        im[count == 0] = np.nan
        return im, count

    def sigma_raw(self, predicted):
        """Each observation's standard error on the corrected scale: its own (mdx2), or that
        of the counts expected from the prediction (physical)."""
        if not self.physical:
            return self.obs.error.astype(np.float64)
        md = self.obs.model
        cols = (md[c] for c in merging.MODEL_COLUMNS)
        return np.sqrt(sum(merging.expected_variance(predicted, *cols, self.variance_scale)))

    # ---- one factor's linear problem

    def fit_mdx2(self, kind, im):
        """mdx2's alternating step: refine factor ``kind`` of every sweep (each on its own;
        the detector: one for all) against the merged intensities ``im``, solved by LSQR;
        the mean normalised chi^2 (mdx2's x2)."""
        s = self.settings[kind]
        a, b, c, d = self.model()
        imv = np.nan_to_num(im[self.obs.ih])
        sig = self.sigma_raw(a * b * d * imv + a * d * c)
        I = self.obs.intensity.astype(np.float64)  # noqa: E741
        # target y and multiplier m per observation such that y ~ m * factor, with error e
        if kind == "scaling":
            y, m, e = I / (a * d) - c, imv, sig / (a * d)
        elif kind == "absorption":
            y, m, e = I, b * d * imv + d * c, sig
        elif kind == "detector":
            y, m, e = I, a * b * imv + a * c, sig
        else:  # offset: I/(a d) - b Im = c
            y, m, e = I / (a * d) - b * imv, np.ones_like(I), sig / (a * d)
        groups = (
            [(None, np.flatnonzero(~self.excluded))]
            if kind == "detector"
            else list(enumerate(self.rows))
        )
        x2 = []
        for j, rows in groups:
            keep = rows[~self.excluded[rows]]
            if kind == "detector":
                f = self.detector
                if "detector" not in self._matrices:
                    self._matrices["detector"] = f.matrix(self.coords)
                A0 = self._matrices["detector"][keep]
            else:
                f = self.batches[j][kind]
                A0 = self._matrix(j, kind)[np.searchsorted(rows, keep)]
            A = sparse.diags(m[keep] / e[keep]) @ A0
            yy_vec = y[keep] / e[keep]
            AA = (A.T @ A).tocsr()
            Ay = A.T @ yy_vec
            yy = float(yy_vec @ yy_vec)
            trace = AA.diagonal().sum()
            penalties = []
            for mult, B in f.penalties(s):
                BB = (B.T @ B).tocsr()
                if BB.diagonal().sum() > 0:  # none along an axis of fewer than 3 points
                    penalties.append((mult * trace / BB.diagonal().sum(), BB))
            if kind == "offset":  # pull towards the minimum value: mdx2's H = identity
                H = sparse.eye(AA.shape[0], format="csr")
                penalties.append((s.alpha_min * AA.diagonal().max(), H))
            G = AA.copy()
            for weight, BB in penalties:
                G = G + weight * BB
            u = splinalg.lsqr(G.tocsc(), Ay)[0]
            chi = float(u @ (AA @ u) - 2 * u @ Ay + yy) / max(len(keep), 1)
            if kind == "offset" and s.min is not None:
                u = np.maximum(u, s.min)
                u += s.min - u.min()
            f.u = u
            x2.append(chi)
        return float(np.mean(x2))

    def _factors_of(self, kind) -> list[Factor]:
        return [self.detector] if kind == "detector" else [b[kind] for b in self.batches]

    def fit_joint(self, kind, im):
        """Physical mode: one Gauss-Newton step of factor ``kind`` (every sweep's at once)
        jointly with the merged intensities, which are eliminated (Schur complement).

        Alternating fits (mdx2) move a factor against merged intensities that already absorb
        part of it: a detector response seen by the observations of a voxel at nearby
        positions is hidden in that voxel's merged value, and the iteration creeps (measured:
        after 200 alternations a 10 % response was still 9 % off). The joint step solves for
        both, so that only the true degeneracies remain: the overall level (held fixed here:
        the step keeps the mean of the factor over the observations) and, for d, a function
        of the scattering angle alone (symmetry mates share |s|), which the smoothness
        penalty settles."""
        s = self.settings[kind]
        a, b, c, d = self.model()
        use, ih, _ = self._used()
        m_vox = len(self.obs.voxels)
        imv = np.nan_to_num(im[ih])
        a, b, c, d = a[use], b[use], c[use], d[use]
        cols, vals = self._ell(kind)
        cols, vals = cols[use], vals[use]
        factors = self._factors_of(kind)
        u = self._params(kind)
        npar = len(u)
        fval = np.einsum("ij,ij->i", vals, u[cols])
        # prediction = fval * (m Im + p) + q, or for the offset m Im + n fval
        if kind == "offset":
            m, n = a * b * d, a * d
            pred = m * imv + n * fval
            Fu, Gm = n, m
        else:
            m, p, q = {
                "scaling": (a * d, 0.0, a * d * c),
                "detector": (a * b, a * c, 0.0),
                "absorption": (b * d, d * c, 0.0),
            }[kind]
            pred = fval * (m * imv + p) + q
            Fu, Gm = m * imv + p, fval * m
        I = self._used()[2]["intensity"]  # noqa: E741
        w = 1.0 / self.variance_used(pred)
        r = I - pred
        JuWJu = _gram(cols, vals, w * Fu * Fu, npar)
        # X: (voxel, parameter) couplings, sum over a voxel's observations of w Fu Gm A_i
        k = cols.shape[1]
        X = sparse.csr_matrix(
            ((vals * (w * Fu * Gm)[:, None]).ravel(), (np.repeat(ih, k), cols.ravel())),
            shape=(m_vox, npar),
        )
        Dv = np.bincount(ih, weights=w * Gm * Gm, minlength=m_vox)
        inv = np.where(Dv > 0, 1.0 / np.where(Dv > 0, Dv, 1.0), 0.0)
        JmWr = np.bincount(ih, weights=w * Gm * r, minlength=m_vox)
        trace = JuWJu.diagonal().sum()
        S = JuWJu - (X.T @ sparse.diags(inv) @ X)
        rhs = _project(cols, vals, w * Fu * r, npar) - X.T @ (inv * JmWr)
        for mult, B in self._joint_penalties(kind, factors, s):
            BB = (B.T @ B).tocsr()
            if mult == "min":  # offset: mdx2's pull towards zero, max(diag AA) times identity
                alpha = s.alpha_min * JuWJu.diagonal().max()
            else:
                if BB.diagonal().sum() == 0:  # no curvature along an axis of < 3 points
                    continue
                alpha = mult * trace / BB.diagonal().sum()
            S = S + alpha * BB
            rhs = rhs - alpha * (BB @ u)
        S = S + sparse.eye(npar) * (1e-12 * trace / npar)  # parameters no datum or penalty reaches
        if kind == "offset":
            K, rhs_k = S.tocsc(), rhs
        else:  # hold the factor's mean over the observations: the overall level is free
            cvec = _project(cols, vals, np.ones(len(use)), npar) / len(use)
            K = sparse.bmat(
                [[S, sparse.csr_matrix(cvec[:, None])], [sparse.csr_matrix(cvec[None, :]), None]]
            ).tocsc()
            rhs_k = np.concatenate([rhs, [0.0]])
        step = solve(K, rhs_k)[:npar]
        u = u + step
        if kind == "offset" and s.min is not None:
            u = np.maximum(u, s.min)
            u += s.min - u.min()
        k = 0
        for f in factors:
            f.u = u[k : k + f.u_size]
            k += f.u_size
        return float(np.sum(w * r * r)) / len(use)

    def _joint_penalties(self, kind, factors, s):
        """The penalties of every sweep's factor, block-diagonal (mdx2's, per factor)."""
        per = [f.penalties(s) for f in factors]
        out = []
        for i in range(len(per[0])):
            out.append((per[0][i][0], sparse.block_diag([pf[i][1] for pf in per], "csr")))
        if kind == "offset":
            out.append(("min", sparse.eye(sum(f.u_size for f in factors), format="csr")))
        return out

    def variance_used(self, predicted):
        """Variance of the observations in use (physical: from the counts expected from
        ``predicted``, the corrected intensity the model gives them)."""
        _, _, col = self._used()
        cols = (col[c] for c in merging.MODEL_COLUMNS)
        return sum(merging.expected_variance(predicted, *cols, self.variance_scale))

    def refine(self, kinds: tuple[str, ...], stage: str, rule: str):
        """Iterate fits of ``kinds`` (mdx2: one factor, or c then b together) until x2 stops
        falling by ``x2tol``, then reject outliers; the settings of factor ``rule`` apply
        (mdx2: the offset's when b and c are refined together)."""
        s = self.settings[rule]
        old = 1e6
        history = []
        for _ in range(s.niter):
            im, _ = self.merge(*self.model())
            for kind in kinds:
                x2 = self.fit_joint(kind, im) if self.physical else self.fit_mdx2(kind, im)
            history.append(x2)
            self.log(f"  {stage}: chi2 {x2:.6f}")
            if old - x2 < s.x2tol:
                break
            old = x2
        self.summary["x2"][stage] = history
        self.reject_outliers(s.outlier, stage)

    def _measure_variance_scale(self, a, b, c, d):
        """Physical mode: how much more the observations scatter about the current model
        than counting statistics say (an integrating detector's ADU; see
        merge.variance_scale), measured after each stage, before its outlier limit is applied
        (before any scaling the scatter includes what the model is about to remove)."""
        scaled = apply_scales(self.obs, a * b * d, c / b)
        scaled = dataclasses.replace(scaled, variance_scale=1.0)
        im, _, count, use = merging.merge_expected(scaled, ~self.excluded)
        k = merging.variance_scale(scaled, im, count, use)
        self.variance_scale = k if k > merging.VARIANCE_SCALE_TOLERANCE else 1.0
        self.summary["variance_scale"] = self.variance_scale

    def polish(self, cycles: int = 10, tol: float = 1e-6):
        """Physical mode: after mdx2's stages, refine every enabled factor again in turn
        until chi^2 settles. mdx2 fits b once, before d and a exist, so b keeps what they
        later explain (measured: b 2-3 % off a simulated drift with a detector response,
        within 1 % after this)."""
        kinds = [
            k for k in ("offset", "scaling", "detector", "absorption") if self.settings[k].enable
        ]
        if len(kinds) < 2:
            return
        old = None
        history = []
        for _ in range(cycles):
            im, _ = self.merge(*self.model())
            for kind in kinds:
                x2 = self.fit_joint(kind, im)
                im, _ = self.merge(*self.model())
            history.append(x2)
            if old is not None and abs(old - x2) < tol * max(abs(x2), 1.0):
                break
            old = x2
        self.summary["x2"]["all factors"] = history
        self.log(f"  all factors: chi2 {history[-1]:.6f} after {len(history)} cycles")

    def reject_outliers(self, nsigma, stage):
        a, b, c, d = self.model()
        if self.physical:
            self._measure_variance_scale(a, b, c, d)
        im, _ = self.merge(a, b, c, d)
        imv = im[self.obs.ih]
        pred = a * b * d * imv + a * d * c
        with np.errstate(invalid="ignore", divide="ignore"):
            if self.physical:
                resid = np.abs(pred - self.obs.intensity) / self.sigma_raw(np.nan_to_num(pred))
            else:  # mdx2: (scale (Im + offset) - I) / sigma, low side only
                resid = (pred - self.obs.intensity) / self.obs.error
            out = (resid > nsigma) & ~self.excluded
        self.excluded = self.excluded | out
        self._excluded_version += 1
        self.summary["outliers"][stage] = int(out.sum())
        self.log(f"  {stage}: rejected {int(out.sum())} outliers (> {nsigma} sigma)")

    def run(self) -> Scales:
        st = self.settings
        if not any(s.enable for s in st.values()):
            raise InputError("scale: every factor is disabled; enable at least one")
        self.add_factors()
        # mdx2's stages, in its order
        if st["scaling"].enable:
            self.refine(("scaling",), "scaling", "scaling")
        if st["scaling"].enable and st["offset"].enable:
            self.refine(("offset", "scaling"), "scaling+offset", "offset")
        if st["offset"].enable:
            self.refine(("offset",), "offset", "offset")
        if st["detector"].enable:
            self.refine(("detector",), "detector", "detector")
        if st["absorption"].enable:
            self.refine(("absorption",), "absorption", "absorption")
        if self.physical:
            self.polish()
        if not self.compat:
            self._normalise()
        self.summary["used"] = int((~self.excluded).sum())
        return Scales(self.batches, self.summary)

    def _normalise(self):
        """Fix the one free constant (b, d or a against the merged intensities): the mean of
        a*b*d over the observations used becomes 1."""
        a, b, _, d = self.model()
        g = (a * b * d)[~self.excluded]
        if not len(g):
            return
        k = float(np.mean(g))
        # I_obs = a d (b I + c): dividing b (or d, or a) by k and I by k leaves c as it is
        for kind in ("scaling", "detector", "absorption"):
            fs = {id(bt[kind]): bt[kind] for bt in self.batches if kind in bt}
            for f in fs.values():
                f.u = f.u / k
            if fs:
                self.summary["normalised"] = {"factor": kind, "divided_by": k}
                return


def scale(obs, coords, settings, mdx2_compat=False, log=print) -> Scales:
    """Fit the enabled factors (see the module docstring) to gathered observations."""
    return Refiner(obs, coords, settings, mdx2_compat, log).run()
