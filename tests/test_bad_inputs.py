# ruff: noqa: E501 - the table of bad inputs reads best one case per line
"""Nothing wrong passes silently: a table of bad inputs across every step, each refused with
exit status 2 and one line naming the file or option, no traceback, and no output or
temporary file left behind. Plus a full disk (a file-size limit), a killed import whose rerun
gives identical arrays, and stale temporary files cleaned by the next run."""

from __future__ import annotations

import gzip
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import SCRIPTS, reduce_sweep, run_script
from realdata import REAL, need

from diffuseflow.simulate import preset, write_sweeps


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """Two small processed sweeps of different crystals (a: insulin-like, b: P 21 21 21)."""
    a = tmp_path_factory.mktemp("sweep_a")
    b = tmp_path_factory.mktemp("sweep_b")
    write_sweeps(preset("insulin", nx=420, ny=380, n_frames=8, bkg_frames=4, seed=21), a, log=None)
    write_sweeps(preset("p212121", nx=400, ny=360, n_frames=6, bkg_frames=3, seed=22), b, log=None)
    # a on to a map; b's cases need its tables only as far as correct
    return reduce_sweep(a, to="map"), reduce_sweep(b, to="correct")


def copy_sweep(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def expt_edit(d: Path, edit) -> Path:
    path = d / "crystal/sweep.expt"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    return path


def corrupt_first_chunk(path: Path):
    with h5py.File(path, "r") as f:
        info = f["entry/image_series/data"].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + 16)
        fh.write(b"\xff\x00garbage, not deflate\x00\xff" * 4)


def flip_cbf_byte(path: Path):
    raw = bytearray(path.read_bytes())
    i = raw.find(b"\x0c\x1a\x04\xd5") + 4 + 200
    raw[i] ^= 0x40
    path.write_bytes(bytes(raw))


# (case id, builder(a, b, tmp) -> (script, args...), words the one-line message must hold)
CASES = [
    # -- import_geometry ------------------------------------------------------------------
    ("geom-no-expt", lambda a, b, t: ("import_geometry", t / "nothere.expt"), ["nothere.expt", "no such file"]),
    ("geom-not-json", lambda a, b, t: ("import_geometry", a / "geometry.nxs"), ["geometry.nxs", "not valid JSON"]),
    ("geom-no-crystal", lambda a, b, t: ("import_geometry", a / "background/sweep.expt"), ["sweep.expt", "no crystal"]),
    ("geom-multi-panel", lambda a, b, t: ("import_geometry", need(REAL / "expt/I23_24_panel.json")), ["I23_24_panel.json", "24 panels"]),
    ("geom-bad-hall", lambda a, b, t: ("import_geometry", expt_edit(copy_sweep(a, t / "c"), lambda d: d["crystal"][0].update(space_group_hall_symbol=" Q 9 9"))), ["sweep.expt", "Hall symbol"]),
    ("geom-zero-spacing", lambda a, b, t: ("import_geometry", a / "crystal/sweep.expt", "--sample_spacing", 0, 10, 10), ["--sample_spacing", "positive"]),
    ("geom-no-experiment-3", lambda a, b, t: ("import_geometry", a / "crystal/sweep.expt", "--experiment", 3), ["sweep.expt", "no experiment 3"]),
    ("geom-frames-outside", lambda a, b, t: ("import_geometry", a / "crystal/sweep.expt", "--frames", 2, 99), ["sweep.expt", "frames [2, 99]"]),
    ("geom-read-only-dir", lambda a, b, t: ("import_geometry", a / "crystal/sweep.expt", "--outfile", "/sys/geometry.nxs"), ["/sys/geometry.nxs", "cannot write"]),
    ("geom-missing-wavelength", lambda a, b, t: ("import_geometry", expt_edit(copy_sweep(a, t / "c"), lambda d: d["beam"][0].pop("wavelength"))), ["sweep.expt", "wavelength"]),
    # -- import_data ----------------------------------------------------------------------
    ("data-missing-image", lambda a, b, t: ("import_data", _rm(copy_sweep(a, t / "c") / "crystal/images/crystal_00003.cbf")), ["crystal_00003.cbf", "not found"]),
    ("data-truncated-cbf", lambda a, b, t: ("import_data", _truncate(copy_sweep(a, t / "c") / "crystal/images/crystal_00002.cbf")), ["crystal_00002.cbf", "cannot read image"]),
    ("data-empty-cbf", lambda a, b, t: ("import_data", _empty(copy_sweep(a, t / "c") / "crystal/images/crystal_00004.cbf")), ["crystal_00004.cbf", "empty image file"]),
    ("data-cbf-md5", lambda a, b, t: ("import_data", _flip(copy_sweep(a, t / "c") / "crystal/images/crystal_00001.cbf")), ["crystal_00001.cbf", "Content-MD5"]),
    ("data-unknown-format", lambda a, b, t: ("import_data", expt_edit(copy_sweep(a, t / "c"), lambda d: d["imageset"][0].update(template="images/crystal_#####.tif"))), ["crystal_00001.tif", "unknown image format"]),
    ("data-bad-untrusted", lambda a, b, t: ("import_data", a / "crystal/sweep.expt", "--untrusted", "circle=1,2"), ["--untrusted", "circle"]),
    ("data-chunks-two-numbers", lambda a, b, t: ("import_data", a / "crystal/sweep.expt", "--chunks", 1, 2), ["--chunks"]),
    ("data-bad-slab", lambda a, b, t: ("import_data", a / "crystal/sweep.expt", "--slab", 3, 2), ["--slab 3 2"]),
    ("data-gather-missing-part", lambda a, b, t: ("import_data", a / "crystal/sweep.expt", "--gather", t / "part0.nxs"), ["part0.nxs", "no such file"]),
    ("data-gather-not-a-part", lambda a, b, t: ("import_data", a / "crystal/sweep.expt", "--gather", a / "data.nxs"), ["data.nxs", "not a partial file"]),
    ("data-frames-inverted", lambda a, b, t: ("import_data", a / "crystal/sweep.expt", "--frames", 5, 2), ["sweep.expt", "first <= last"]),
    ("data-read-only-dir", lambda a, b, t: ("import_data", a / "crystal/sweep.expt", "--outfile", "/sys/x/data.nxs"), ["/sys/x/data.nxs", "cannot create its folder"]),
    ("data-h5-no-data-file", lambda a, b, t: ("import_data", need(REAL / "expt/vmxi_experiments_0.expt")), ["image_17578_master.h5", "not found"]),
    ("data-bad-nproc", lambda a, b, t: ("import_data", a / "crystal/sweep.expt", "--nproc", 0), ["--nproc"]),
    ("data-negative-floor", lambda a, b, t: ("import_data", a / "crystal/sweep.expt", "--strong_pixel_floor", -1), ["--strong_pixel_floor", ">= 0", "-1"]),
    ("data-floor-not-a-number", lambda a, b, t: ("import_data", a / "crystal/sweep.expt", "--strong_pixel_floor", "ten"), ["--strong_pixel_floor", "'ten'"]),
    # -- find_peaks -----------------------------------------------------------------------
    ("peaks-no-geometry", lambda a, b, t: ("find_peaks", t / "g.nxs", a / "data.nxs", "--count_threshold", 20), ["g.nxs", "no such file"]),
    ("peaks-data-not-hdf5", lambda a, b, t: ("find_peaks", a / "geometry.nxs", a / "crystal/sweep.expt", "--count_threshold", 20), ["sweep.expt", "not an HDF5"]),
    ("peaks-data-other-sweep", lambda a, b, t: ("find_peaks", a / "geometry.nxs", b / "data.nxs", "--count_threshold", 20), ["different sweeps", "sweep_b"]),
    ("peaks-same-names-other-folder", lambda a, b, t: ("find_peaks", a / "geometry.nxs", _reimported(a, t), "--count_threshold", 20), ["different sweeps", "crystal_#####.cbf"]),
    ("peaks-background-data", lambda a, b, t: ("find_peaks", a / "geometry.nxs", a / "bkg_data.nxs", "--count_threshold", 20), ["different sweeps", "bkg_data.nxs"]),
    ("peaks-threshold-nan", lambda a, b, t: ("find_peaks", a / "geometry.nxs", a / "data.nxs", "--count_threshold", "nan"), ["--count_threshold", "finite"]),
    ("peaks-threshold-negative", lambda a, b, t: ("find_peaks", a / "geometry.nxs", a / "data.nxs", "--count_threshold", -5), ["--count_threshold", ">= 0"]),
    ("peaks-threshold-word", lambda a, b, t: ("find_peaks", a / "geometry.nxs", a / "data.nxs", "--count_threshold", "many"), ["--count_threshold", "'many'"]),
    ("peaks-threshold-too-high", lambda a, b, t: ("find_peaks", a / "geometry.nxs", a / "data.nxs", "--count_threshold", 1e9), ["data.nxs", "no pixel above count_threshold"]),
    ("peaks-sigma-tiny", lambda a, b, t: ("find_peaks", a / "geometry.nxs", a / "data.nxs", "--count_threshold", 20, "--sigma_cutoff", 0.01), ["sigma_cutoff 0.01", "rejects", "raise sigma_cutoff"]),
    ("peaks-sigma-negative", lambda a, b, t: ("find_peaks", a / "geometry.nxs", a / "data.nxs", "--count_threshold", 20, "--sigma_cutoff", -1), ["--sigma_cutoff", "> 0"]),
    # below the strong-pixel floor find_peaks reads the stack (above it, it reads only the list
    # made at import from the sound data; integrate then meets the damaged chunk, below)
    ("peaks-corrupt-chunk", lambda a, b, t: ("find_peaks", a / "geometry.nxs", _corrupt(a / "data.nxs", t), "--count_threshold", 5), ["data.nxs", "corrupt"]),
    ("peaks-read-only-dir", lambda a, b, t: ("find_peaks", a / "geometry.nxs", a / "data.nxs", "--count_threshold", 20, "--outfile", "/sys/peaks.nxs"), ["/sys/peaks.nxs", "cannot write"]),
    ("peaks-no-threshold", lambda a, b, t: ("find_peaks", a / "geometry.nxs", a / "data.nxs"), ["--count_threshold is required"]),
    # -- mask_peaks -----------------------------------------------------------------------
    ("mask-peaks-other-sweep", lambda a, b, t: ("mask_peaks", a / "geometry.nxs", a / "data.nxs", b / "peaks.nxs"), ["different sweeps", "sweep_b"]),
    ("mask-geometry-other-sweep", lambda a, b, t: ("mask_peaks", b / "geometry.nxs", a / "data.nxs", a / "peaks.nxs"), ["different sweeps", "sweep_b"]),
    ("mask-peaks-outside-axes", lambda a, b, t: ("mask_peaks", a / "geometry.nxs", a / "data.nxs", _unrecorded(b / "peaks.nxs", t)), ["peaks.nxs", "outside", "another sweep"]),
    ("mask-peaks-is-a-mask", lambda a, b, t: ("mask_peaks", a / "geometry.nxs", a / "data.nxs", a / "mask.nxs"), ["mask.nxs", "peak_model"]),
    ("mask-sigma-zero", lambda a, b, t: ("mask_peaks", a / "geometry.nxs", a / "data.nxs", a / "peaks.nxs", "--sigma_cutoff", 0), ["--sigma_cutoff", "> 0"]),
    ("mask-read-only-dir", lambda a, b, t: ("mask_peaks", a / "geometry.nxs", a / "data.nxs", a / "peaks.nxs", "--outfile", "/sys/mask.nxs"), ["/sys/mask.nxs", "cannot write"]),
    ("mask-corrupt-data", lambda a, b, t: ("mask_peaks", a / "geometry.nxs", _not_hdf5(t), a / "peaks.nxs"), ["junk.nxs", "not an HDF5"]),
    # -- bin_image_series -----------------------------------------------------------------
    ("bin-mask-other-shape", lambda a, b, t: ("bin_image_series", a / "bkg_data.nxs", 2, 20, 20, "--mask", b / "mask.nxs"), ["mask.nxs", "different sweeps"]),
    ("bin-mask-unrecorded-shape", lambda a, b, t: ("bin_image_series", a / "bkg_data.nxs", 2, 20, 20, "--mask", _unrecorded(b / "mask.nxs", t)), ["mask.nxs", "shape"]),
    ("bin-range-inverted", lambda a, b, t: ("bin_image_series", a / "bkg_data.nxs", 2, 20, 20, "--valid_range", 200, 0), ["valid_range", "LO < HI"]),
    ("bin-range-nan", lambda a, b, t: ("bin_image_series", a / "bkg_data.nxs", 2, 20, 20, "--valid_range", "nan", 10), ["valid_range", "finite"]),
    ("bin-zero-bins", lambda a, b, t: ("bin_image_series", a / "bkg_data.nxs", 0, 20, 20), ["bin size", "> 0"]),
    ("bin-no-data", lambda a, b, t: ("bin_image_series", t / "nothing.nxs", 2, 20, 20), ["nothing.nxs", "no such file"]),
    ("bin-corrupt-chunk", lambda a, b, t: ("bin_image_series", _corrupt(a / "bkg_data.nxs", t), 2, 20, 20), ["bkg_data.nxs", "corrupt"]),
    # -- integrate ------------------------------------------------------------------------
    ("integrate-subdivide-zero", lambda a, b, t: ("integrate", a / "geometry.nxs", a / "data.nxs", "--mask", a / "mask.nxs", "--subdivide", 0, 3, 3), ["--subdivide needs three positive"]),
    ("integrate-spread-negative", lambda a, b, t: ("integrate", a / "geometry.nxs", a / "data.nxs", "--mask", a / "mask.nxs", "--max_spread", -1), ["--max_spread"]),
    ("integrate-mask-is-data", lambda a, b, t: ("integrate", a / "geometry.nxs", a / "data.nxs", "--mask", a / "data.nxs"), ["data.nxs", "no /entry/mask group"]),
    ("integrate-mask-other-sweep", lambda a, b, t: ("integrate", a / "geometry.nxs", a / "data.nxs", "--mask", b / "mask.nxs"), ["mask.nxs", "different sweeps", "sweep_b"]),
    ("integrate-data-other-sweep", lambda a, b, t: ("integrate", b / "geometry.nxs", a / "data.nxs", "--mask", a / "mask.nxs"), ["geometry.nxs", "different sweeps", "sweep_b"]),
    ("integrate-gather-not-a-part", lambda a, b, t: ("integrate", a / "geometry.nxs", a / "data.nxs", "--mask", a / "mask.nxs", "--gather", a / "integrated.nxs"), ["integrated.nxs", "slab part"]),
    ("integrate-corrupt-chunk", lambda a, b, t: ("integrate", a / "geometry.nxs", _corrupt(a / "data.nxs", t), "--mask", a / "mask.nxs"), ["data.nxs", "corrupt"]),
    ("integrate-read-only-dir", lambda a, b, t: ("integrate", a / "geometry.nxs", a / "data.nxs", "--mask", a / "mask.nxs", "--outfile", "/sys/integrated.nxs"), ["/sys/integrated.nxs", "cannot write"]),
    # -- correct --------------------------------------------------------------------------
    ("correct-not-a-table", lambda a, b, t: ("correct", a / "geometry.nxs", a / "data.nxs"), ["data.nxs", "no /entry/hkl_table group"]),
    ("correct-background-not-binned", lambda a, b, t: ("correct", a / "geometry.nxs", a / "integrated.nxs", "--background", a / "bkg_data.nxs"), ["bkg_data.nxs", "no /entry/binned_image_series"]),
    ("correct-geometry-other-sweep", lambda a, b, t: ("correct", b / "geometry.nxs", a / "integrated.nxs"), ["integrated.nxs", "different sweeps", "sweep_b"]),
    ("correct-read-only-dir", lambda a, b, t: ("correct", a / "geometry.nxs", a / "integrated.nxs", "--outfile", "/sys/corrected.nxs"), ["/sys/corrected.nxs", "cannot write"]),
    # -- merge ----------------------------------------------------------------------------
    ("scale-not-corrected", lambda a, b, t: ("scale", a / "integrated.nxs"), ["integrated.nxs", "no 'intensity' column"]),
    ("scale-every-factor-off", lambda a, b, t: ("scale", a / "corrected.nxs", "--scaling.enable", "false"), ["every factor is disabled"]),
    ("scale-bad-bool", lambda a, b, t: ("scale", a / "corrected.nxs", "--detector.enable", "maybe"), ["--detector.enable", "true or false"]),
    ("scale-negative-dphi", lambda a, b, t: ("scale", a / "corrected.nxs", "--scaling.dphi", -1), ["--scaling.dphi", "> 0"]),
    ("scale-fractional-nx", lambda a, b, t: ("scale", a / "corrected.nxs", "--detector.nx", 2.5), ["--detector.nx", "whole number"]),
    ("scale-outfiles-count", lambda a, b, t: ("scale", a / "corrected.nxs", "--outfile", t / "x.nxs", t / "y.nxs"), ["--outfile names 2 files for 1 inputs"]),
    ("scale-other-crystal-form", lambda a, b, t: ("scale", a / "corrected.nxs", b / "corrected.nxs", "--outfile", t / "x.nxs", t / "y.nxs"), ["sweep_b", "Laue group mmm", "cannot scale together"]),
    ("scale-same-table-twice", lambda a, b, t: ("scale", a / "corrected.nxs", a / "corrected.nxs", "--outfile", t / "x.nxs", t / "y.nxs"), ["given twice"]),
    ("merge-scale-count", lambda a, b, t: ("merge", a / "corrected.nxs", "--scale", a / "scales.nxs", a / "scales.nxs"), ["--scale names 2 files for 1 corrected tables"]),
    ("merge-scale-not-scales", lambda a, b, t: ("merge", a / "corrected.nxs", "--scale", a / "corrected.nxs"), ["corrected.nxs", "no scaling model"]),
    ("scale-qc-count", lambda a, b, t: ("plot_scale_qc", a / "corrected.nxs", "--scale", a / "scales.nxs", a / "scales.nxs", "-o", t / "qc"), ["--scale names 2 files for 1 corrected tables"]),
    ("scale-qc-not-scales", lambda a, b, t: ("plot_scale_qc", a / "corrected.nxs", "--scale", a / "corrected.nxs", "-o", t / "qc"), ["corrected.nxs", "no scaling model"]),
    ("merge-not-corrected", lambda a, b, t: ("merge", a / "integrated.nxs"), ["integrated.nxs", "no 'intensity' column"]),
    ("merge-friedel-no-geometry", lambda a, b, t: ("merge", a / "corrected.nxs", "--split", "Friedel"), ["--split Friedel needs --geometry"]),
    ("merge-other-crystal-form", lambda a, b, t: ("merge", a / "corrected.nxs", b / "corrected.nxs"), ["sweep_b", "Laue group mmm", "Laue group m-3", "cannot merge"]),
    ("merge-outlier-negative", lambda a, b, t: ("merge", a / "corrected.nxs", "--outlier", -1), ["--outlier", "> 0"]),
    # -- map ------------------------------------------------------------------------------
    ("map-limits-inverted", lambda a, b, t: ("map", a / "geometry.nxs", a / "merged.nxs", "--limits", 3, 1, 0, 1, 0, 1), ["minimum 3 is above maximum 1"]),
    ("map-of-corrected-table", lambda a, b, t: ("map", a / "geometry.nxs", a / "corrected.nxs"), ["corrected.nxs", "several rows of one voxel"]),
    ("map-other-crystal-form", lambda a, b, t: ("map", b / "geometry.nxs", a / "merged.nxs"), ["sweep_b", "Laue group mmm", "cannot be mapped"]),
    ("map-qc-not-a-map", lambda a, b, t: ("plot_map_qc", a / "merged.nxs", a / "corrected.nxs", "-o", t / "qc"), ["corrected.nxs", "is this map.nxs"]),
    # -- plot_qc --------------------------------------------------------------------------
    ("qc-mixed-sweeps", lambda a, b, t: ("plot_qc", _mixed(a, b, t), "-o", t / "qc"), ["different sweeps", "mask.nxs"]),
    ("qc-no-results-dir", lambda a, b, t: ("plot_qc", t / "results/none", "-o", t / "qc"), ["results/none", "no such results directory"]),
]  # fmt: skip


def _rm(p: Path) -> Path:
    p.unlink()
    return p.parents[1] / "sweep.expt"


def _truncate(p: Path) -> Path:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return p.parents[1] / "sweep.expt"


def _empty(p: Path) -> Path:
    p.write_bytes(b"")
    return p.parents[1] / "sweep.expt"


def _flip(p: Path) -> Path:
    flip_cbf_byte(p)
    return p.parents[1] / "sweep.expt"


def _corrupt(src: Path, t: Path) -> Path:
    dst = t / "c" / src.name
    dst.parent.mkdir(exist_ok=True)
    shutil.copyfile(src, dst)
    corrupt_first_chunk(dst)
    return dst


def _unrecorded(src: Path, t: Path) -> Path:
    """A copy without the sweep record (as mdx2 would write it): other checks must hold."""
    dst = t / "u" / src.name
    dst.parent.mkdir(exist_ok=True)
    shutil.copyfile(src, dst)
    with h5py.File(dst, "a") as f:
        del f.attrs["diffuseflow_sweep"]
    return dst


def _reimported(a: Path, t: Path) -> Path:
    """The same file names and settings in another folder (as a second crystal collected
    with the same template would be), imported there."""
    c = copy_sweep(a, t / "c")
    run_script("import_data", c / "crystal/sweep.expt", "--outfile", c / "data.nxs")
    return c / "data.nxs"


def _mixed(a: Path, b: Path, t: Path) -> Path:
    """A results folder whose mask.nxs belongs to another sweep."""
    d = t / "results" / "mixed"
    d.mkdir(parents=True)
    for name in ("geometry.nxs", "data.nxs", "peaks.nxs"):
        shutil.copyfile(a / name, d / name)
    shutil.copyfile(b / "mask.nxs", d / "mask.nxs")
    return d


def _not_hdf5(t: Path) -> Path:
    p = t / "junk.nxs"
    p.write_bytes(b"this is not an HDF5 file\n" * 10)
    return p


def test_the_table_is_large_enough():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case, build, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_in_one_line(sweeps, tmp_path, case, build, words):
    a, b = sweeps
    before = {p: p.stat().st_mtime_ns for d in (a, b) for p in d.rglob("*")}
    script, *args = build(a, b, tmp_path)
    has_outfile = "--outfile" in args or script.startswith("plot_")
    out = tmp_path / "out.nxs"
    cmd = [*args] if has_outfile else [*args, "--outfile", out]
    proc = run_script(script, *cmd, check=False)
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-500:], proc.stderr[-2000:])
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"{script}.py: error: "), lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not out.exists()
    leftovers = [p for p in tmp_path.rglob(".*") if ".tmp" in p.name]
    assert not leftovers, leftovers
    # the shared sweeps were only read
    assert {p: p.stat().st_mtime_ns for d in (a, b) for p in d.rglob("*")} == before


# ------------------------------------------------------------------------------------------
# full disk, killed jobs, stale temporary files


def _limit_file_size(nbytes):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return preexec


#: every step that writes a .nxs: (script, its arguments in sweep a, the output's name)
WRITERS = {
    "import_geometry": lambda a: (a / "crystal/sweep.expt",),
    "import_data": lambda a: (a / "crystal/sweep.expt",),
    "find_peaks": lambda a: (a / "geometry.nxs", a / "data.nxs", "--count_threshold", 20),
    "mask_peaks": lambda a: (a / "geometry.nxs", a / "data.nxs", a / "peaks.nxs"),
    "bin_image_series": lambda a: (a / "bkg_data.nxs", 2, 20, 20),
    "integrate": lambda a: (a / "geometry.nxs", a / "data.nxs", "--mask", a / "mask.nxs",
                            "--subdivide", 3, 3, 3),
    "correct": lambda a: (a / "geometry.nxs", a / "integrated.nxs", "--background",
                          a / "binned.nxs"),
    "scale": lambda a: (a / "corrected.nxs",),
    "merge": lambda a: (a / "corrected.nxs",),
    "map": lambda a: (a / "geometry.nxs", a / "merged.nxs", "--limits", -2, 2, -2, 2, -2, 2),
}  # fmt: skip
OUTPUT = {"import_geometry": "geometry.nxs", "import_data": "data.nxs", "find_peaks": "peaks.nxs", "mask_peaks": "mask.nxs",
          "bin_image_series": "binned.nxs", "integrate": "integrated.nxs",
          "correct": "corrected.nxs", "scale": "scales.nxs", "merge": "merged.nxs", "map": "map.nxs"}  # fmt: skip


#: the streamed stacks, and where their image or mask chunks are
STACK = {"data.nxs": "entry/image_series/data", "mask.nxs": "entry/mask/signal"}


def _full_at(path: Path) -> int:
    """Where the disk fills: for a stack (written chunk by chunk, its small metadata at the
    end) in the middle of its chunks; for the other files (written in one go) at a third."""
    if path.name not in STACK:
        return path.stat().st_size // 3
    with h5py.File(path) as f:
        d = f[STACK[path.name]]
        info = d.id.get_chunk_info(d.id.get_num_chunks() // 2)
    return info.byte_offset + info.size // 2


@pytest.mark.parametrize("script", sorted(WRITERS))
def test_a_write_that_runs_out_of_space_leaves_nothing(sweeps, tmp_path, script):
    """A file-size limit (a full disk, as the writer sees it) inside the output: one line
    naming the output, exit 2, and neither the output nor a temporary file left."""
    a, _ = sweeps
    name = OUTPUT[script]
    out = tmp_path / name
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / f"{script}.py"), *map(str, WRITERS[script](a)),
         "--outfile", str(out)],
        capture_output=True, text=True, preexec_fn=_limit_file_size(_full_at(a / name)),
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0] and "could not be written" in lines[0], lines
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not list(tmp_path.glob(f".{name}.tmp*"))


def _frames(path):
    with h5py.File(path) as f:
        return f["entry/image_series/data"][()]


def test_killed_import_then_rerun_gives_identical_arrays(tmp_path):
    """kill -9 in the middle of an import: its temporary file stays; the rerun of the same
    output removes it and writes exactly the arrays a clean run writes."""
    d = tmp_path / "sim"
    write_sweeps(preset("insulin", nx=1200, ny=1100, n_frames=24, bkg_frames=1, seed=8), d,
                 kinds=("crystal",), log=None)  # fmt: skip
    expt = d / "crystal/sweep.expt"
    clean = tmp_path / "clean.nxs"
    run_script("import_data", expt, "--outfile", clean, "--chunks", 2, 0, 0)
    out = tmp_path / "out" / "data.nxs"
    out.parent.mkdir()
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "import_data.py"), str(expt), "--outfile", str(out),
         "--chunks", "2", "0", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 120
    temps = []
    while time.time() < deadline:  # wait until some frames are written, then kill
        temps = list(out.parent.glob(".data.nxs.tmp*"))
        if temps and temps[0].stat().st_size > 2_000_000:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert temps and temps[0].exists() and not out.exists(), "killed before it wrote anything?"
    run_script("import_data", expt, "--outfile", out, "--chunks", 2, 0, 0)
    np.testing.assert_array_equal(_frames(out), _frames(clean))
    assert not list(out.parent.glob(".data.nxs.tmp*"))


def test_stale_temps_of_live_processes_are_kept(tmp_path):
    from diffuseflow.io.nexus import remove_stale_temps

    out = tmp_path / "x.nxs"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".x.nxs.tmp{dead.pid}"
    live = tmp_path / f".x.nxs.tmp{os.getppid()}"  # the parent of this test: alive
    other = tmp_path / f".y.nxs.tmp{dead.pid}"  # another output's: not ours to touch
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    assert remove_stale_temps(out) == [stale]
    assert live.exists() and other.exists() and not stale.exists()


def test_gzip_cbf_with_bad_checksum(tmp_path):
    """The same check through a .cbf.gz (real Pilatus file, one bit of its data flipped)."""
    src = need(REAL / "lcys/l-cyst_01_00001.cbf.gz")
    raw = bytearray(gzip.decompress(src.read_bytes()))
    raw[raw.find(b"\x0c\x1a\x04\xd5") + 4 + 1000] ^= 0x01
    bad = tmp_path / "l-cyst_01_00001.cbf.gz"
    bad.write_bytes(gzip.compress(bytes(raw)))
    from diffuseflow.errors import InputError
    from diffuseflow.io.images import _read_fabio

    with pytest.raises(InputError, match="Content-MD5"):
        _read_fabio(str(bad))
