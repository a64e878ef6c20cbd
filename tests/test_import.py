"""Import: every reader and compression, data.nxs equal to the raw frames, invalid pixels -1,
geometry.nxs in mdx2's layout, and one-line errors with no output left behind."""

import json
import re
import shutil

import h5py
import numpy as np
import pytest
from conftest import SCRIPTS, run_script

from diffuseflow.io import strong
from diffuseflow.io.expt import read_expt
from diffuseflow.io.images import FrameReader, parse_untrusted
from diffuseflow.io.nexus import provenance
from diffuseflow.simulate import Simulation, preset, write_sweeps

SMALL = dict(nx=520, ny=420, n_frames=5, bkg_frames=1, seed=11)


def test_simulated_frames_do_not_depend_on_the_number_of_processes(tmp_path):
    """Every frame has its own random stream: two worker processes write the same files."""
    p = preset("insulin", **SMALL)
    for workers in (1, 2):
        write_sweeps(p, tmp_path / str(workers), log=None, workers=workers)
    files = sorted(q.relative_to(tmp_path / "1") for q in (tmp_path / "1").rglob("*.cbf"))
    assert len(files) == p.n_frames + p.bkg_frames
    for rel in files:
        assert (tmp_path / "1" / rel).read_bytes() == (tmp_path / "2" / rel).read_bytes(), rel


@pytest.mark.parametrize(
    "fmt, compress",
    [("cbf", None), ("cbf", "bz2"), ("cbf", "gz"), ("smv", None), ("smv", "bz2"), ("h5", None)],
)
def test_each_format_imports_to_the_raw_frames(tmp_path, fmt, compress):
    p = preset("insulin", image_format=fmt, compress=compress, **SMALL)
    write_sweeps(p, tmp_path, kinds=("crystal",), log=None)
    expt = tmp_path / "crystal" / "sweep.expt"
    run_script("import_data", expt, "--outfile", tmp_path / "data.nxs", "--chunks", 2, 0, 0)
    sim = Simulation(p)
    invalid = sim.invalid_mask()
    with h5py.File(tmp_path / "data.nxs") as f:
        data = f["entry/image_series/data"]
        assert data.dtype == np.int32 and data.shape == (5, 420, 520)
        assert data.chunks[0] == 2
        stack = data[()]
        phi = f["entry/image_series/phi"][()]
    np.testing.assert_allclose(phi, 160.0 + 0.1 * (np.arange(5) + 0.5))
    # the same frames, regenerated from the simulator's seed, are the truth
    geom = sim.geometry(expt_path=expt)
    sim.prepare(geom)
    bkg = sim.background_rate(geom) * p.exposure
    gaps = np.zeros_like(invalid)
    for x0, y0, x1, y1 in read_expt(expt).panel.mask_rectangles:
        gaps[y0:y1, x0:x1] = True
    for i in range(5):
        counts, _ = sim.frame("crystal", i, bkg, invalid)
        if fmt == "smv":  # a uint16 file cannot hold -1: the beamstop reads 0; gaps stay masked
            counts = np.where(gaps, -1, np.clip(counts, 0, 65535))
        np.testing.assert_array_equal(stack[i], counts)
    if fmt == "smv":
        invalid = gaps
    assert np.all(stack[:, invalid] == -1)
    assert np.all(stack[:, ~invalid] >= 0)


def test_untrusted_regions_and_trusted_range(tmp_path):
    p = preset("insulin", **SMALL)
    write_sweeps(p, tmp_path, kinds=("crystal",), log=None)
    expt = read_expt(tmp_path / "crystal" / "sweep.expt")
    regions = parse_untrusted(["circle=100,80,10", "rectangle=300,320,10,30"])
    r = FrameReader(expt, regions)
    frame = r.read(0)
    iy, ix = np.ogrid[:420, :520]
    circle = (ix + 0.5 - 100) ** 2 + (iy + 0.5 - 80) ** 2 <= 100
    assert np.all(frame[circle] == -1)
    assert np.all(frame[10:30, 300:320] == -1)
    assert np.count_nonzero(frame[~(circle | Simulation(p).invalid_mask())] == -1) < 20 * 20 + 5
    r.lo, r.hi = 5, 10  # values outside the inclusive trusted range become -1
    f2 = r.read(0)
    raw = r.read_raw(0)
    assert np.all(f2[(raw < 5) | (raw > 10)] == -1)
    assert np.all(f2[(raw >= 5) & (raw <= 10) & ~r.static_invalid] >= 5)


@pytest.mark.parametrize(
    "spec", ["circle=1,2", "ellipse=1,2,3", "rectangle=5,4,1,2", "circle=a,b,c"]
)
def test_bad_untrusted_region(spec):
    from diffuseflow.errors import InputError

    with pytest.raises(InputError, match="untrusted"):
        parse_untrusted([spec])


def test_geometry_nxs_layout_and_provenance(insulin_run):
    g = insulin_run / "geometry.nxs"
    with h5py.File(g) as f:
        assert f.attrs["mdx2_version"] == "1.0.5"
        for name, cls in [
            ("crystal", "Crystal"),
            ("symmetry", "Symmetry"),
            ("corrections", "Corrections"),
            ("miller_index", "MillerIndex"),
        ]:
            assert f[f"entry/{name}"].attrs["mdx2_class"] == cls
            assert f[f"entry/{name}"].attrs["mdx2_module"] == "mdx2.geometry"
        sym = f["entry/symmetry"]
        assert sym["space_group_number"][()] == 199
        assert sym["laue_group_number"][()] == 200  # P m -3, as mdx2 reports for I 21 3
        assert sym["reflection_conditions"][()].decode() == "(h + k + l) % 2 == 0"
        assert sym["reciprocal_space_asu"][()].decode() == (
            "(h>=0) & (((l>=h) & (k>h)) | ((l==h) & (k==h)))"
        )
        assert sym["space_group_operators"].shape == (24, 3, 4)
        h = f["entry/miller_index/h/signal"]
        # 30 frames of 0.1 deg -> 1 + ceil(3/1) phi nodes; 1 + ceil(619/10), 1 + ceil(981/10)
        assert h.shape == (4, 63, 100)
        for c in ("solid_angle", "efficiency", "attenuation", "polarization", "d3s"):
            sig = f[f"entry/corrections/{c}/signal"][()]
            assert sig.shape == (63, 100) and np.all(np.isfinite(sig)) and np.all(sig > 0)
        att = f["entry/corrections/attenuation/signal"][()]
        assert 0.9 < att.min() < att.max() < 1  # ~0.03 %/mm of air at 12.7 keV
    prov = provenance(g)
    assert prov["program"] == "import_geometry" and prov["version"]
    assert prov["parameters"]["sample_spacing"] == [1, 10, 10]
    assert prov["inputs"][0]["path"].endswith("sweep.expt")


def test_data_nxs_readable_from_any_directory(insulin_run, tmp_path):
    elsewhere = tmp_path / "copy.nxs"
    shutil.copy(insulin_run / "data.nxs", elsewhere)
    with h5py.File(elsewhere) as f:
        d = f["entry/image_series/data"]
        assert not d.is_virtual
        assert d[0].max() > 0  # real counts, not the -1 fill value
        assert f["entry/image_series"].attrs["signal"] == "data"


def test_reimport_gives_identical_arrays(tmp_path, insulin_run):
    expt = insulin_run / "crystal" / "sweep.expt"
    run_script("import_data", expt, "--outfile", tmp_path / "a.nxs", "--nproc", 1)
    with h5py.File(tmp_path / "a.nxs") as a, h5py.File(insulin_run / "data.nxs") as b:
        np.testing.assert_array_equal(
            a["entry/image_series/data"][()], b["entry/image_series/data"][()]
        )


# ------------------------------------------------------------------------------------------
# bad inputs: one line, non-zero exit, no output


@pytest.fixture
def small_sweep(tmp_path):
    write_sweeps(preset("insulin", **SMALL), tmp_path, kinds=("crystal",), log=None)
    return tmp_path


def assert_user_error(proc, *fragments):
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for frag in fragments:
        assert frag in err[0], err[0]


def image(small_sweep, n):
    return small_sweep / "crystal" / "images" / f"crystal_{n:05d}.cbf"


def test_missing_image(small_sweep):
    image(small_sweep, 3).unlink()
    out = small_sweep / "data.nxs"
    proc = run_script(
        "import_data", small_sweep / "crystal/sweep.expt", "--outfile", out, check=False
    )
    assert_user_error(proc, "crystal_00003.cbf", "not found")
    assert not out.exists() and not list(small_sweep.glob(".data.nxs*"))


def test_truncated_cbf(small_sweep):
    p = image(small_sweep, 2)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    out = small_sweep / "data.nxs"
    proc = run_script(
        "import_data", small_sweep / "crystal/sweep.expt", "--outfile", out, check=False
    )
    assert_user_error(proc, "crystal_00002.cbf")
    assert not out.exists()


def test_wrong_image_size(small_sweep):
    from diffuseflow.io.writers import write_cbf

    write_cbf(str(image(small_sweep, 4)), np.zeros((100, 120), np.int32))
    out = small_sweep / "data.nxs"
    proc = run_script(
        "import_data", small_sweep / "crystal/sweep.expt", "--outfile", out, check=False
    )
    assert_user_error(proc, "crystal_00004.cbf", "120x100", "does not match")
    assert not out.exists()


@pytest.mark.parametrize("script", ["import_data", "import_geometry"])
def test_expt_missing_a_key(small_sweep, script):
    path = small_sweep / "crystal/sweep.expt"
    doc = json.loads(path.read_text())
    del doc["beam"][0]["wavelength"]
    path.write_text(json.dumps(doc))
    out = small_sweep / "out.nxs"
    proc = run_script(script, path, "--outfile", out, check=False)
    assert_user_error(proc, "sweep.expt", "wavelength")
    assert not out.exists()


def test_unknown_image_format(small_sweep):
    path = small_sweep / "crystal/sweep.expt"
    doc = json.loads(path.read_text())
    doc["imageset"][0]["template"] = "images/crystal_#####.tif"
    path.write_text(json.dumps(doc))
    out = small_sweep / "data.nxs"
    proc = run_script("import_data", path, "--outfile", out, check=False)
    assert_user_error(proc, "crystal_00001.tif", "unknown image format")
    assert not out.exists()


#: tools whose results --mdx2_compat changes, and tools that take --nproc (README's claims)
COMPAT_TOOLS = {
    "import_geometry", "find_peaks", "mask_peaks", "integrate", "correct", "scale", "merge",
    "map",
}  # fmt: skip
NPROC_TOOLS = {"import_data", "find_peaks", "mask_peaks", "bin_image_series", "integrate",
               "simulate_sweep"}  # fmt: skip


@pytest.mark.parametrize("script", sorted(p.stem for p in SCRIPTS.glob("*.py")))
def test_help_of_every_script(script):
    """--help works; every option states its default; --mdx2_compat and --nproc exactly where
    the README says; no help text names a tool that does not exist."""
    text = run_script(script, "--help").stdout
    assert text.startswith("usage")
    options = text.split("options:")[1]
    for block in re.split(r"\n  (?=-)", "\n" + options):
        block = " ".join(block.split())
        if block and not block.startswith("-h,"):
            assert "default" in block.lower(), f"{script}: {block[:80]}"
    assert ("--mdx2_compat" in text) == (script in COMPAT_TOOLS)
    assert ("--nproc" in text) == (script in NPROC_TOOLS)
    for tool in re.findall(r"\b(\w+)\.py\b", text):
        assert (SCRIPTS / f"{tool}.py").exists(), f"{script} --help names {tool}.py"


def test_dxtbx_reader_only_when_importable(small_sweep):
    import importlib.util

    out = small_sweep / "data.nxs"
    proc = run_script(
        "import_data",
        small_sweep / "crystal/sweep.expt",
        "--reader",
        "dxtbx",
        "--outfile",
        out,
        check=False,
    )
    if importlib.util.find_spec("dxtbx") is None:
        assert_user_error(proc, "dxtbx is not importable")
        assert not out.exists()
    else:  # with DIALS installed, dxtbx's frames equal the built-in reader's
        assert proc.returncode == 0, proc.stderr
        run_script(
            "import_data",
            small_sweep / "crystal/sweep.expt",
            "--outfile",
            small_sweep / "builtin.nxs",
        )
        with h5py.File(out) as a, h5py.File(small_sweep / "builtin.nxs") as b:
            np.testing.assert_array_equal(
                a["entry/image_series/data"][()], b["entry/image_series/data"][()]
            )


# ------------------------------------------------------------------------------------------
# slab jobs: each writes its whole frame-chunks, the gather copies them


def raw_chunks(dset):
    return {
        dset.id.get_chunk_info(i).chunk_offset: dset.id.read_direct_chunk(
            dset.id.get_chunk_info(i).chunk_offset
        )
        for i in range(dset.id.get_num_chunks())
    }


def test_slab_jobs_then_gather_equal_a_single_import(insulin_run, tmp_path):
    """30 frames in chunks of 4 over 4 jobs (8 chunks: 2 per job), parts gathered in any order:
    the same array as one import, and the gather moves the parts' compressed chunks unchanged.

    The parts' chunks, not the single import's, are the reference for the bytes: a compressor
    promises the same decoded data, not the same stream in every process (ISA-L's may differ,
    seen once on a CI machine)."""
    expt = insulin_run / "crystal" / "sweep.expt"
    run_script("import_data", expt, "--chunks", 4, 0, 0, "--outfile", tmp_path / "one.nxs")
    parts = []
    for k in range(4):
        parts.append(tmp_path / f"part{k}.nxs")
        run_script("import_data", expt, "--chunks", 4, 0, 0, "--slab", k, 4, "--outfile", parts[-1])
    with h5py.File(parts[1]) as f:
        assert list(f.attrs["diffuseflow_partial_frames"]) == [8, 16]
        assert f["entry/image_series/data"].id.get_num_chunks() < 20  # only its own chunks
    run_script("import_data", expt, "--gather", *parts[::-1], "--outfile", tmp_path / "all.nxs")
    part_chunks = {}
    for part in parts:
        with h5py.File(part) as f:
            part_chunks.update(raw_chunks(f["entry/image_series/data"]))
    with h5py.File(tmp_path / "one.nxs") as a, h5py.File(tmp_path / "all.nxs") as b:
        da, db = a["entry/image_series/data"], b["entry/image_series/data"]
        np.testing.assert_array_equal(da[()], db[()])
        gathered = raw_chunks(db)
        assert sorted(gathered) == sorted(part_chunks) == sorted(raw_chunks(da))
        changed = [k for k in gathered if gathered[k] != part_chunks[k]]
        assert not changed, f"chunks recompressed by the gather: {changed}"
        assert "gathered from 4 slab jobs" in b.attrs["diffuseflow_program"]
        assert "diffuseflow_partial_frames" not in b.attrs
        assert_same_strong_pixels(a, b)


def assert_same_strong_pixels(a: h5py.File, b: h5py.File):
    """The import's strong-pixel lists (io.strong) of two data.nxs files hold the same rows,
    per-frame floors, valid-pixel counts and histograms."""
    ga, gb = a[strong.GROUP], b[strong.GROUP]
    for key in (*strong.COLUMNS, "first", "floor", "n_valid", "histogram", "histogram_frames"):
        np.testing.assert_array_equal(ga[key][()], gb[key][()], err_msg=key)
    assert len(ga["frame"]) > 1000 and np.isfinite(ga["floor"][()]).all()


def test_more_slab_jobs_than_chunks(insulin_run, tmp_path):
    """Jobs beyond the number of frame-chunks write empty parts; the gather still works."""
    expt = insulin_run / "crystal" / "sweep.expt"
    parts = [tmp_path / f"p{k}.nxs" for k in range(5)]
    for k, part in enumerate(parts):
        run_script("import_data", expt, "--chunks", 10, 0, 0, "--slab", k, 5, "--outfile", part)
    run_script("import_data", expt, "--gather", *parts, "--outfile", tmp_path / "all.nxs")
    with h5py.File(tmp_path / "all.nxs") as b, h5py.File(insulin_run / "data.nxs") as a:
        np.testing.assert_array_equal(
            a["entry/image_series/data"][()], b["entry/image_series/data"][()]
        )
    run_script("import_data", expt, "--chunks", 10, 0, 0, "--outfile", tmp_path / "one.nxs")
    with h5py.File(tmp_path / "all.nxs") as b, h5py.File(tmp_path / "one.nxs") as a:
        assert_same_strong_pixels(a, b)


def test_gather_refuses_incomplete_or_foreign_parts(insulin_run, tmp_path):
    expt = insulin_run / "crystal" / "sweep.expt"
    bkg = insulin_run / "background" / "sweep.expt"
    parts = [tmp_path / f"p{k}.nxs" for k in range(3)]
    for k, part in enumerate(parts):
        run_script("import_data", expt, "--chunks", 5, 0, 0, "--slab", k, 3, "--outfile", part)
    out = tmp_path / "all.nxs"
    missing = run_script("import_data", expt, "--gather", *parts[:2], "--outfile", out, check=False)
    assert_user_error(missing, "3 slab jobs")
    gap = run_script(
        "import_data", expt, "--gather", parts[0], parts[2], "--outfile", out, check=False
    )
    assert_user_error(gap, "3 slab jobs")
    foreign = run_script("import_data", bkg, "--gather", *parts, "--outfile", out, check=False)
    assert_user_error(foreign, str(parts[0]), "expt=")
    whole = run_script(
        "import_data", expt, "--gather", insulin_run / "data.nxs", "--outfile", out, check=False
    )
    assert_user_error(whole, "not a partial file")
    bad_k = run_script("import_data", expt, "--slab", 3, 3, "--outfile", out, check=False)
    assert_user_error(bad_k, "--slab 3 3")
    assert not out.exists()
