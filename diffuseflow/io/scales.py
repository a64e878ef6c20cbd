"""scales.nxs: one sweep's fitted scaling factors, in mdx2 1.0.5's layout.

Each factor is an NXdata group under /entry named as mdx2 names it (``scaling_model``,
``offset_model``, ``detector_model``, ``absorption_model``; ``@mdx2_module=mdx2.scaling``,
``@mdx2_class`` its model class), holding its control-point axes and the values ``u`` on that
grid (first axis first: ``u[i, j]`` at ``ix[i], iy[j]``), so NeXpy plots it and mdx2's
``loadobj`` / merge read it; ours read mdx2's.
"""

from __future__ import annotations

import numpy as np

from diffuseflow.errors import InputError
from diffuseflow.io import nexus

#: the four factors, in mdx2's names: the group each gets in scales.nxs, its mdx2 class and
#: the coordinates of its control-point grid
FACTORS = {
    "scaling": ("scaling_model", "ScalingModel", ("phi",)),
    "offset": ("offset_model", "OffsetModel", ("s", "phi")),
    "detector": ("detector_model", "DetectorModel", ("ix", "iy")),
    "absorption": ("absorption_model", "AbsorptionModel", ("ix", "iy", "phi")),
}


def write_factors(f, factors: dict[str, tuple[dict[str, np.ndarray], np.ndarray]]):
    """Write factors {kind: (axes, values on the grid)} into the open file ``f`` (a
    nexus.new_file)."""
    for kind in FACTORS:  # mdx2's order: scaling, offset, detector, absorption
        if kind not in factors:
            continue
        axes, grid = factors[kind]
        group, cls, _ = FACTORS[kind]
        g = nexus.mdx2_group(f["entry"], group, "mdx2.scaling", cls, nx_class="NXdata")
        g.attrs["signal"] = "u"
        g.attrs["axes"] = nexus.str_array(list(axes))
        for name, values in axes.items():
            g.create_dataset(name, data=np.asarray(values, np.float64))
        g.create_dataset("u", data=np.asarray(grid, np.float64))


def read_factors(path) -> dict[str, tuple[dict[str, np.ndarray], np.ndarray]]:
    """The factors stored in a scales.nxs (ours or mdx2's): {kind: (axes, values)}."""
    with nexus.open_input(path, "scales.nxs") as f:
        out = {}
        for kind, (group, _, axes) in FACTORS.items():
            if f"entry/{group}" not in f:
                continue
            g = f[f"entry/{group}"]
            missing = [a for a in (*axes, "u") if a not in g]
            if missing:
                raise InputError(f"{path}: /entry/{group} has no {missing[0]!r}")
            ax = {a: np.asarray(g[a][()], np.float64).ravel() for a in axes}
            u = np.asarray(g["u"][()], np.float64)
            shape = tuple(len(v) for v in ax.values())
            if u.shape != shape and u.size == int(np.prod(shape)) and len(shape) == 1:
                u = u.reshape(shape)
            if u.shape != shape:
                raise InputError(f"{path}: /entry/{group}/u has shape {u.shape}, its axes {shape}")
            if any(len(v) < 2 or np.any(np.diff(v) <= 0) for v in ax.values()):
                raise InputError(f"{path}: /entry/{group} axes are not increasing grids")
            out[kind] = (ax, u)
        if not out:
            raise InputError(f"{path}: no scaling model in it; is this scales.nxs?")
        return out
