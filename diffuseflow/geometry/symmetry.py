"""Space-group symmetry via gemmi: mdx2's Symmetry fields and systematic absences.

Two absence rules:

* ``"full"`` (default): every systematic absence of the space group (centring, screw axes,
  glide planes), from gemmi's ``GroupOps.systematic_absences``;
* ``"centring"``: lattice centring only, exactly mdx2 1.0.5's ``reflection_conditions``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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


@dataclass(frozen=True)
class CrystalSymmetry:
    """A space group in the crystal's own setting, as DIALS writes it (any Hall symbol).

    ``ops`` are the symmetry operations in that setting (absences follow them directly);
    ``reference`` is the group in its reference setting, and ``to_reference`` the matrix
    M with hkl_reference = hkl @ M (identity for the reference setting). A change-of-basis
    setting such as DIALS' ' I 2 2 3 (y+z,x+z,x+y)' (I 2 3 on its primitive cell) is not in
    gemmi's table, but its absences, Laue operators and asymmetric unit are all well defined.
    """

    hall: str
    ops: gemmi.GroupOps
    reference: gemmi.SpaceGroup  #: the group in its reference (standard) setting
    to_reference: np.ndarray
    hm: str  #: Hermann-Mauguin symbol; a non-tabulated setting carries its change of basis

    @property
    def is_reference_setting(self) -> bool:
        return bool(np.array_equal(self.to_reference, np.eye(3)))

    @property
    def number(self) -> int:
        return self.reference.number

    @property
    def centring(self) -> str:
        """Lattice centring of this setting: a primitive cell of an I lattice is 'P'."""
        return self.ops.find_centering()


def _reciprocal_rotations(ops: gemmi.GroupOps) -> set:
    # hkl' = hkl @ W for real-space rotation W, so the set of W is the reciprocal point group
    return {tuple(np.array(op.rot).ravel() // op.DEN) for op in ops.sym_ops}


def _basis_to_reference(ops: gemmi.GroupOps, ref: gemmi.SpaceGroup, cobs, source):
    """M with hkl_ref = hkl @ M, chosen among the forms of the candidate changes of basis and
    checked: it must carry the setting's rotations onto the reference's and its absences
    onto the reference's absences (so a wrong reading cannot pass silently)."""
    want = _reciprocal_rotations(ref.operations())
    r = np.arange(-4, 5)
    grid = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    absent = np.asarray(ops.systematic_absences(grid.astype(np.int32)), bool)
    for cob in cobs:
        R = np.array(cob.rot, float) / cob.DEN
        for M in (R, R.T, np.linalg.inv(R), np.linalg.inv(R).T):
            if _maps_onto(ops, ref, M, want, grid, absent):
                return M
    raise InputError(f"{source}: cannot relate its space group to the reference setting")


def _maps_onto(ops, ref, M, want, grid, absent) -> bool:
    Minv = np.linalg.inv(M)
    got = set()
    for op in ops.sym_ops:
        W = Minv @ (np.array(op.rot, float) / op.DEN) @ M
        if np.abs(W - np.rint(W)).max() > 1e-9:
            return False
        got.add(tuple(np.rint(W).astype(int).ravel()))
    if got != want:
        return False
    ref_hkl = grid @ M
    integral = np.all(np.abs(ref_hkl - np.rint(ref_hkl)) < 1e-9, axis=1)
    ref_absent = np.ones(len(grid), bool)  # not a reference lattice point: never allowed
    ref_absent[integral] = np.asarray(
        ref.operations().systematic_absences(np.rint(ref_hkl[integral]).astype(np.int32)), bool
    )
    return bool(np.array_equal(absent, ref_absent))


def space_group_from_hall(hall: str, source: str = "crystal") -> CrystalSymmetry:
    """The crystal's symmetry from a DIALS Hall symbol, in any setting gemmi can parse."""
    text = hall.strip()
    try:
        ops = gemmi.symops_from_hall(text)
    except (RuntimeError, ValueError) as e:
        raise InputError(f"{source}: cannot parse Hall symbol {hall!r} ({e})") from None
    sg = gemmi.find_spacegroup_by_ops(ops)
    if sg is not None:
        if sg.basisop == gemmi.Op("x,y,z"):
            return CrystalSymmetry(hall, ops, sg, np.eye(3), sg.hm)
        # a tabulated but non-reference setting (e.g. R 3:R, P 1 1 21)
        ref = gemmi.find_spacegroup_by_number(sg.number)
        M = _basis_to_reference(ops, ref, [sg.basisop], source)
        return CrystalSymmetry(hall, ops, ref, M, sg.hm)
    base, paren, rest = text.partition("(")
    tabulated = None
    if paren:
        try:
            tabulated = gemmi.find_spacegroup_by_ops(gemmi.symops_from_hall(base.strip()))
            cob = gemmi.Op(rest.rstrip(") ").strip())
        except (RuntimeError, ValueError):
            tabulated = None
    if tabulated is None:
        raise InputError(
            f"{source}: Hall symbol {hall!r} is neither a tabulated space group nor a "
            "tabulated one with a change of basis '(...)'"
        )
    ref = gemmi.find_spacegroup_by_number(tabulated.number)
    cobs = [cob, tabulated.basisop * cob, cob * tabulated.basisop]
    M = _basis_to_reference(ops, ref, cobs, source)
    return CrystalSymmetry(hall, ops, ref, M, f"{tabulated.hm} ({rest.rstrip(') ').strip()})")


def as_symmetry(group) -> CrystalSymmetry:
    """A CrystalSymmetry from itself or from a tabulated gemmi.SpaceGroup."""
    if isinstance(group, CrystalSymmetry):
        return group
    return space_group_from_hall(" " + group.hall, group.xhm())


def centring_condition(sym: CrystalSymmetry) -> str:
    return CENTRING_CONDITIONS.get(as_symmetry(sym).centring, "True")


def _linear_form(column: np.ndarray) -> str:
    """sum_i c_i * (h, k, l)_i as a numexpr term, e.g. '(k + l)' or '(0.5*h - k)'."""
    terms = []
    for c, name in zip(column, "hkl", strict=True):
        if abs(c) < 1e-12:
            continue
        sign = "-" if c < 0 else "+"
        mag = abs(c)
        coef = "" if abs(mag - 1) < 1e-12 else f"{mag:.12g}*"
        terms.append(f"{sign} {coef}{name}")
    text = " ".join(terms).lstrip("+ ")
    return f"({text})"


def _asu_numexpr(group) -> str:
    """gemmi's reciprocal ASU condition as a numexpr expression, like mdx2's; for a
    non-reference setting, h, k, l are replaced by the reference indices hkl @ M."""
    sym = as_symmetry(group)
    text = gemmi.ReciprocalAsu(sym.reference).condition_str()
    text = re.sub(r"(?<![<>=!])=(?!=)", "==", text)
    text = re.sub(r"([hkl]\s*[<>=!]=?\s*-?[hkl0-9]+)", r"(\1)", text)
    text = text.replace(" and ", " & ").replace(" or ", " | ")
    if sym.is_reference_setting:
        return text
    forms = {name: _linear_form(sym.to_reference[:, i]) for i, name in enumerate("hkl")}
    return re.sub(r"\b([hkl])\b", lambda m: forms[m.group(1)], text)


def laue_group(group) -> gemmi.SpaceGroup:
    """Primitive centrosymmetric group of the point-group rotations (mdx2: I 21 3 -> P m -3),
    of the reference setting."""
    sg = as_symmetry(group).reference
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


def symmetry_fields(group) -> dict:
    """The nine fields of mdx2's Symmetry object, in the crystal's own setting (operators and
    ASU expressed on its hkl; numbers and symbols of the reference group)."""
    sym = as_symmetry(group)
    ops = list(sym.ops)
    sgo = np.array(
        [np.hstack([np.array(op.rot) / op.DEN, np.array(op.tran)[:, None] / op.DEN]) for op in ops]
    )
    lg = laue_group(sym)
    if sym.is_reference_setting:
        lops = np.array([np.array(op.rot) / op.DEN for op in lg.operations()], dtype=float)
    else:  # the same point group, written on this setting's hkl: M W_ref M^-1
        M = sym.to_reference
        lops = np.array(
            [M @ (np.array(op.rot) / op.DEN) @ np.linalg.inv(M) for op in lg.operations()]
        )
    return {
        "space_group_number": np.int64(sym.number),
        "space_group_symbol": sym.hm,
        "crystal_system": sym.reference.crystal_system_str().capitalize(),
        "space_group_operators": sgo.astype(float),
        "laue_group_number": np.int64(lg.number),
        "laue_group_symbol": sym.reference.laue_str(),
        "laue_group_operators": lops,
        "reciprocal_space_asu": _asu_numexpr(sym),
        "reflection_conditions": centring_condition(sym),
    }


def is_allowed(sg: gemmi.SpaceGroup, hkl: np.ndarray, rule: str = "full") -> np.ndarray:
    """True where integer Miller indices ``hkl`` (..., 3) are not systematically absent."""
    sym = as_symmetry(sg)
    hkl = np.asarray(hkl)
    flat = np.ascontiguousarray(hkl.reshape(-1, 3), dtype=np.int32)
    if rule == "full":
        absent = sym.ops.systematic_absences(flat)
        return ~np.asarray(absent, bool).reshape(hkl.shape[:-1])
    if rule == "centring":
        h, k, l = (flat[:, i].astype(np.int64) for i in range(3))  # noqa: E741
        c = sym.centring
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
