"""``import_data.py --reader dxtbx`` against a real dxtbx (Debian's python3-dials: dxtbx 3.11.2)
on real beamline files, compared with the built-in reader pixel for pixel.

The environment is built once by bench/dxtbx_env.py. Without Debian's dxtbx the tests skip,
unless DIFFUSEFLOW_REQUIRE_DXTBX=1 (set in CI, which installs python3-dials).

dxtbx 3.11 reads only the legacy scan encoding of .expt files (the files are rewritten so),
and its trusted range is exclusive at both ends (``lo < v < hi``, dxtbx/model/panel.h), where
dxtbx >= 3.12 and diffuseflow's reader take it inclusive: pixels whose value is exactly a
bound are the only ones allowed to differ, and there dxtbx must say invalid.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import ROOT, SCRIPTS, run_script
from realdata import REAL, legacy_scan, need

sys.path.insert(0, str(ROOT / "bench"))
import dxtbx_env  # noqa: E402

from diffuseflow.io.images import FrameReader  # noqa: E402

SNASE = ROOT.parent / "shared" / "data" / "snase"


@pytest.fixture(scope="module")
def dxtbx_python():
    required = os.environ.get("DIFFUSEFLOW_REQUIRE_DXTBX") == "1"
    if not dxtbx_env.available():
        if required:
            pytest.fail("Debian's python3-dials (dxtbx) is not installed")
        pytest.skip("Debian's python3-dials (dxtbx) is not installed")
    return dxtbx_env.ensure_dxtbx_python()


def legacy_expt(src: Path, dst: Path, template: str, experiment: int = 0) -> Path:
    """One experiment of ``src`` as dxtbx 3.11 reads it: legacy scan encoding, absolute
    template, the other experiments (whose images are not here) left out."""
    doc = json.loads(src.read_text())
    exp = doc["experiment"][experiment]
    for kind in ("beam", "detector", "goniometer", "scan", "crystal", "imageset"):
        if kind in exp and isinstance(exp[kind], int):
            doc[kind] = [doc[kind][exp[kind]]]
            exp[kind] = 0
    doc["experiment"] = [exp]
    legacy_scan(doc["scan"][0])
    doc["imageset"][0]["template"] = template
    dst.write_text(json.dumps(doc))
    return dst


def import_both(dxtbx_python, expt: Path, d: Path, frames=(1, 3)):
    sel = ["--frames", *frames]
    ours = d / "builtin.nxs"
    theirs = d / "dxtbx.nxs"
    run_script("import_data", expt, *sel, "--outfile", ours)
    proc = subprocess.run(
        [str(dxtbx_python), str(SCRIPTS / "import_data.py"), str(expt), *map(str, sel),
         "--reader", "dxtbx", "--outfile", str(theirs)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with h5py.File(ours) as a, h5py.File(theirs) as b:
        return a["entry/image_series/data"][()], b["entry/image_series/data"][()]


def raw_frames(expt: Path, frames) -> np.ndarray:
    from diffuseflow.io.expt import read_expt

    reader = FrameReader(read_expt(expt, frames=frames))
    return np.stack([reader.read_raw(i) for i in range(frames[1] - frames[0] + 1)])


def assert_equal_but_bounds(ours, theirs, raw, trusted):
    lo, hi = trusted
    differ = ours != theirs
    at_bound = (raw == lo) | (raw == hi)
    assert not np.any(differ & ~at_bound), int(np.sum(differ & ~at_bound))
    assert np.all(theirs[differ] == -1)  # dxtbx 3.11: the bounds themselves are untrusted
    assert np.array_equal(ours[differ], raw[differ])  # ours: inclusive, the value kept
    return int(differ.sum())


def test_real_pilatus_cbf_through_dxtbx(dxtbx_python, tmp_path):
    """The real L-cysteine Pilatus 2M CBFs (.cbf.gz) with their real DIALS .expt."""
    lcys = need(REAL / "lcys")
    expt = legacy_expt(lcys / "indexed.expt", tmp_path / "lcys.expt",
                       str(lcys / "l-cyst_01_#####.cbf.gz"))  # fmt: skip
    ours, theirs = import_both(dxtbx_python, expt, tmp_path)
    trusted = json.loads(expt.read_text())["detector"][0]["panels"][0]["trusted_range"]
    n = assert_equal_but_bounds(ours, theirs, raw_frames(expt, (1, 3)), trusted)
    assert ours.shape == (3, 1679, 1475)
    assert np.sum(ours == -1) > 0.05 * ours.size  # module gaps and dead pixels, both agree
    print(f"L-cysteine: {n} of {ours.size} pixels at a trusted-range bound differ")


def test_real_ccd_smv_through_dxtbx(dxtbx_python, tmp_path):
    """The real SNase SMV CCD frames (.img.bz2) with their DIALS .expt."""
    expt_src = need(SNASE / "snase.expt")
    template = json.loads(expt_src.read_text())["imageset"][0]["template"]
    expt = legacy_expt(expt_src, tmp_path / "snase.expt", str(SNASE / template))
    ours, theirs = import_both(dxtbx_python, expt, tmp_path)
    trusted = json.loads(expt.read_text())["detector"][0]["panels"][0]["trusted_range"]
    n = assert_equal_but_bounds(ours, theirs, raw_frames(expt, (1, 3)), trusted)
    assert ours.shape == (3, 1024, 1024)
    assert 0 < n < 100  # a few saturated pixels at 65534 (the SNase numbers: 4)
    print(f"SNase: {n} of {ours.size} pixels at a trusted-range bound differ")


def test_an_image_dxtbx_cannot_read_is_one_line(dxtbx_python, tmp_path):
    from diffuseflow.simulate import preset, write_sweeps

    # the simulator's small "Pilatus" does not have a real Pilatus' module layout, so dxtbx's
    # Pilatus format class refuses it: the error must still be one line naming the file
    write_sweeps(preset("insulin", nx=300, ny=250, n_frames=2, bkg_frames=1), tmp_path,
                 kinds=("crystal",), log=None)  # fmt: skip
    src = tmp_path / "crystal/sweep.expt"
    template = str(tmp_path / "crystal" / json.loads(src.read_text())["imageset"][0]["template"])
    expt = legacy_expt(src, tmp_path / "legacy.expt", template)
    proc = subprocess.run(
        [str(dxtbx_python), str(SCRIPTS / "import_data.py"), str(expt), "--reader", "dxtbx",
         "--outfile", str(tmp_path / "x.nxs")],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "legacy.expt: dxtbx cannot" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.nxs").exists()


def _datasets(path) -> dict:
    out = {}

    def keep(name, obj):  # returns None: visititems stops at the first other value
        if isinstance(obj, h5py.Dataset):
            out[name] = obj[()]

    with h5py.File(path) as f:
        f.visititems(keep)
    return out


def test_mdx2_import_geometry_through_dxtbx_equals_ours(dxtbx_python, tmp_path):
    """mdx2 1.0.5's own import_geometry, through real dxtbx, on the real L-cysteine .expt,
    against ours in --mdx2_compat mode: the same groups and datasets; the Miller-index grid and
    every correction but air attenuation to 1e-12 relative. Attenuation: mdx2 takes mu_air from
    cctbx's tables, we from xraydb's (Elam), ~1 % apart at 0.69 Å: exp(-mu d) to 5e-4."""
    lcys = need(REAL / "lcys")
    expt = legacy_expt(lcys / "indexed.expt", tmp_path / "lcys.expt",
                       str(lcys / "l-cyst_01_#####.cbf.gz"))  # fmt: skip
    proc = subprocess.run(
        [str(dxtbx_python), "-m", "mdx2.command_line.import_geometry", str(expt),
         "--outfile", "mdx2.nxs"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_script("import_geometry", expt, "--mdx2_compat", "--outfile", tmp_path / "ours.nxs")
    theirs, ours = _datasets(tmp_path / "mdx2.nxs"), _datasets(tmp_path / "ours.nxs")
    assert set(theirs) == set(ours) - {"entry/diffuseflow_experiment"} and len(theirs) > 30
    for name, want in theirs.items():
        got = ours[name]
        if isinstance(want, bytes) or np.asarray(want).dtype.kind in "SOU":
            assert got == want, name
            continue
        want, got = np.asarray(want, float), np.asarray(got, float)
        assert want.shape == got.shape, name
        scale = np.max(np.abs(want)) if want.size else 1.0
        tol = 5e-4 if name.startswith("entry/corrections/attenuation/signal") else 1e-12
        assert np.max(np.abs(got - want), initial=0) <= tol * scale, name
    assert ours["entry/miller_index/h/signal"].shape == (171, 169, 149)


def test_real_diamond_eiger_master_through_dxtbx(dxtbx_python, tmp_path):
    """The real Diamond I04 NXmx master of an Eiger 2X 16M (Therm_6_2.nxs, its data_000001
    link rebuilt from the same frame converted to CBF, with the detector's 65535/65534
    markers): dxtbx 3.11 reads it with its own format class (dxtbx.load: FormatNXmxDLS16M)
    and gives the frame the built-in reader gives, pixel for pixel, the same 1.25 million
    markers invalid. The data file is uncompressed: the Debian environment's h5py has no
    bitshuffle filter (Debian's hdf5-filter-plugin holds only LZ4 and BZip2)."""
    import fabio
    from realdata import copy_real, single_image_expt

    master = copy_real("Therm_6_2.nxs", tmp_path)
    cbf = fabio.open(str(need(REAL / "cbf/dlsnxs2cbf_therm_0001.cbf.gz"))).data
    frame = np.where(cbf == -1, 65535, np.where(cbf == -2, 65534, cbf)).astype(np.uint16)
    with h5py.File(tmp_path / "Therm_6_2_000001.h5", "w") as f:
        f.create_dataset("data", data=frame[None], chunks=(1, 4362, 4148))
    expt = single_image_expt(
        tmp_path / "x.expt", str(master), (4148, 4362), 1, (-1, 65535), 0.075, single_file=True
    )
    doc = json.loads(expt.read_text())
    legacy_scan(doc["scan"][0])
    expt.write_text(json.dumps(doc))
    ours, theirs = import_both(dxtbx_python, expt, tmp_path, frames=(1, 1))
    np.testing.assert_array_equal(ours, theirs)
    assert (ours == -1).sum() == (cbf < 0).sum() == 1253320
