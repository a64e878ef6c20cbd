"""Space-group symmetry via gemmi: mdx2's Symmetry fields and systematic absences.

Two absence rules:

* ``"full"`` (default): every systematic absence of the space group (centring, screw axes,
  glide planes), from gemmi's ``GroupOps.systematic_absences``;
* ``"centring"``: lattice centring only, exactly mdx2 1.0.5's ``reflection_conditions``.
"""

from __future__ import annotations

import re

import gemmi
import numpy as np

from diffuseflow.errors import InputError

#: mdx2's centring -> reflection_conditions (numexpr strings, see mdx2-compat.md §3.1)
CENTRING_CONDITIONS = {
    "P": "True",
    "I": "(h + k + l) % 2 == 0",
    "A": "(k + l) % 2 == 0",
    "B": "(h + l) % 2 == 0",
    "C": "(h + k) % 2 == 0",
    "F": "((h + k) % 2 == 0) & ((h + l) % 2 == 0) & ((k + l) % 2 == 0)",
    "R": "(- h + k + l) % 3 == 0",
    "H": "(h - k) % 3 == 0",
    "D": "(h + k + l) % 3 == 0",
}

ABSENCE_RULES = ("full", "centring")


def space_group_from_hall(hall: str, source: str = "crystal") -> gemmi.SpaceGroup:
    try:
        sg = gemmi.find_spacegroup_by_ops(gemmi.symops_from_hall(hall.strip()))
    except (RuntimeError, ValueError) as e:
        raise InputError(f"{source}: cannot parse Hall symbol {hall!r} ({e})") from None
    if sg is None:
        raise InputError(f"{source}: Hall symbol {hall!r} is not a tabulated space group")
    return sg


def _centring_of(sg: gemmi.SpaceGroup) -> str:
    c = sg.centring_type()
    if c == "R" and sg.ext == "R":
        return "P"  # rhombohedral axes: primitive lattice
    return c


def centring_condition(sg: gemmi.SpaceGroup) -> str:
    return CENTRING_CONDITIONS.get(_centring_of(sg), "True")


def _asu_numexpr(sg: gemmi.SpaceGroup) -> str:
    """gemmi's reciprocal ASU condition written as a numexpr expression, like mdx2's."""
    text = gemmi.ReciprocalAsu(sg).condition_str()
    text = re.sub(r"(?<![<>=!])=(?!=)", "==", text)
    text = re.sub(r"([hkl]\s*[<>=!]=?\s*-?[hkl0-9]+)", r"(\1)", text)
    return text.replace(" and ", " & ").replace(" or ", " | ")


def laue_group(sg: gemmi.SpaceGroup) -> gemmi.SpaceGroup:
    """Primitive centrosymmetric group of the point-group rotations (mdx2: I 21 3 -> P m -3)."""
    ops = gemmi.GroupOps([gemmi.Op("x,y,z")])
    rots = {tuple(map(tuple, op.rot)) for op in sg.operations().sym_ops}
    sym = []
    for r in rots:
        op = gemmi.Op("x,y,z")
        op.rot = [list(row) for row in r]
        sym.append(op)
    ops = gemmi.GroupOps(sym)
    ops.add_inversion()
    found = gemmi.find_spacegroup_by_ops(ops)
    if found is None:
        raise InputError(f"cannot derive the Laue group of {sg.hm}")
    return found


def symmetry_fields(sg: gemmi.SpaceGroup) -> dict:
    """The nine fields of mdx2's Symmetry object."""
    ops = list(sg.operations())
    sgo = np.array(
        [np.hstack([np.array(op.rot) / op.DEN, np.array(op.tran)[:, None] / op.DEN]) for op in ops]
    )
    lg = laue_group(sg)
    lops = np.array([np.array(op.rot) / op.DEN for op in lg.operations()], dtype=float)
    return {
        "space_group_number": np.int64(sg.number),
        "space_group_symbol": sg.hm,
        "crystal_system": sg.crystal_system_str().capitalize(),
        "space_group_operators": sgo.astype(float),
        "laue_group_number": np.int64(lg.number),
        "laue_group_symbol": sg.laue_str(),
        "laue_group_operators": lops,
        "reciprocal_space_asu": _asu_numexpr(sg),
        "reflection_conditions": centring_condition(sg),
    }


def is_allowed(sg: gemmi.SpaceGroup, hkl: np.ndarray, rule: str = "full") -> np.ndarray:
    """True where integer Miller indices ``hkl`` (..., 3) are not systematically absent."""
    hkl = np.asarray(hkl)
    flat = np.ascontiguousarray(hkl.reshape(-1, 3), dtype=np.int32)
    if rule == "full":
        absent = sg.operations().systematic_absences(flat)
        return ~np.asarray(absent, bool).reshape(hkl.shape[:-1])
    if rule == "centring":
        h, k, l = (flat[:, i].astype(np.int64) for i in range(3))  # noqa: E741
        c = _centring_of(sg)
        ok = {
            "P": lambda: np.ones(h.shape, bool),
            "I": lambda: (h + k + l) % 2 == 0,
            "A": lambda: (k + l) % 2 == 0,
            "B": lambda: (h + l) % 2 == 0,
            "C": lambda: (h + k) % 2 == 0,
            "F": lambda: ((h + k) % 2 == 0) & ((h + l) % 2 == 0) & ((k + l) % 2 == 0),
            "R": lambda: (-h + k + l) % 3 == 0,
            "H": lambda: (h - k) % 3 == 0,
            "D": lambda: (h + k + l) % 3 == 0,
        }.get(c, lambda: np.ones(h.shape, bool))()
        return ok.reshape(hkl.shape[:-1])
    raise ValueError(f"unknown absence rule {rule!r}; use one of {ABSENCE_RULES}")


def allowed_table(sg: gemmi.SpaceGroup, hmax: int, rule: str = "full") -> np.ndarray:
    """Lookup table ``T[h + hmax, k + hmax, l + hmax]`` of allowed reflections, uint8."""
    r = np.arange(-hmax, hmax + 1)
    grid = np.stack(np.meshgrid(r, r, r, indexing="ij"), axis=-1)
    return is_allowed(sg, grid, rule).astype(np.uint8)


def index_limit(cell_max_length: float, d_min: float) -> int:
    """Largest |h|, |k|, |l| reachable at resolution d_min (Angstrom), with a margin of 2."""
    return int(np.ceil(cell_max_length / d_min)) + 2
