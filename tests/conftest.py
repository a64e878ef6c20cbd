"""Shared fixtures: small simulated sweeps (made by diffuseflow's own simulator) and a helper
that runs the command-line scripts as a user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from diffuseflow.simulate import preset, write_sweeps

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
SNASE = ROOT.parent / "shared" / "data" / "snase"


def run_script(name, *args, cwd=None, check=True):
    """Run scripts/<name>.py; returns CompletedProcess (stdout+stderr captured as text)."""
    cmd = [sys.executable, str(SCRIPTS / f"{name}.py"), *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


# Small sweeps: big enough for thousands of peak pixels, small enough for seconds.
INSULIN_SMALL = dict(nx=981, ny=619, n_frames=30, osc=0.1, bkg_frames=8, seed=3)
# phi_start 38 deg sweeps the screw-axis absences 0k0, k = 5..13 across the detector
P212121_SMALL = dict(
    nx=1040, ny=700, n_frames=24, osc=0.25, bkg_frames=6, seed=5, phi_start=38.0, distance=100.0
)


#: the command-line steps after mask_peaks, in workflow order
LATER_STEPS = ("bin", "integrate", "correct", "scale", "merge", "map")


def reduce_sweep(
    d: Path, to="mask", *, nproc=2, valid_range=(0, 200), merge=(), map_limits=2, chunks=None
):
    """Take the simulated sweeps in d (simulate.write_sweeps) through the command-line steps
    as a user would: import both sweeps, find_peaks, mask_peaks, then on to `to` (one of
    LATER_STEPS: bin_image_series of the background in 2x20x20 bins, integrate on a 3x3x3
    grid, correct with that background, scale (b(phi), not applied by the merge: the tests
    score unscaled merges against truth), merge with the options `merge`, a map within
    +-map_limits; ``chunks``: the crystal stack's chunk shape). One helper for every test that
    needs processed sweeps."""
    g, n = d / "geometry.nxs", ("--nproc", nproc)
    ch = ("--chunks", *chunks) if chunks else ()
    run_script("import_geometry", d / "crystal/sweep.expt", "--outfile", g)
    run_script("import_data", d / "crystal/sweep.expt", "--outfile", d / "data.nxs", *ch, *n)
    run_script("import_data", d / "background/sweep.expt", "--outfile", d / "bkg_data.nxs")
    run_script("find_peaks", g, d / "data.nxs", "--count_threshold", 20,
               "--outfile", d / "peaks.nxs", *n)  # fmt: skip
    run_script("mask_peaks", g, d / "data.nxs", d / "peaks.nxs",
               "--outfile", d / "mask.nxs", *n)  # fmt: skip
    steps = LATER_STEPS[: LATER_STEPS.index(to) + 1] if to != "mask" else ()
    vr = ("--valid_range", *valid_range) if valid_range else ()
    commands = {
        "bin": ("bin_image_series", d / "bkg_data.nxs", 2, 20, 20, *vr,
                "--outfile", d / "binned.nxs"),
        "integrate": ("integrate", g, d / "data.nxs", "--mask", d / "mask.nxs",
                      "--subdivide", 3, 3, 3, *n, "--outfile", d / "integrated.nxs"),
        "correct": ("correct", g, d / "integrated.nxs", "--background", d / "binned.nxs",
                    "--outfile", d / "corrected.nxs"),
        "scale": ("scale", d / "corrected.nxs", "--outfile", d / "scales.nxs"),
        "merge": ("merge", d / "corrected.nxs", *merge, "--outfile", d / "merged.nxs"),
        "map": ("map", g, d / "merged.nxs", "--limits", *[-map_limits, map_limits] * 3,
                "--outfile", d / "map.nxs"),
    }  # fmt: skip
    for step in steps:
        run_script(*commands[step])
    return d


def _processed(tmp_path_factory, name, preset_name, overrides):
    d = tmp_path_factory.mktemp(name)
    write_sweeps(preset(preset_name, **overrides), d, log=None)
    return reduce_sweep(d)


@pytest.fixture(scope="session")
def insulin_run(tmp_path_factory):
    """Simulated I 21 3 sweep taken through import, find_peaks and mask_peaks."""
    return _processed(tmp_path_factory, "insulin", "insulin", INSULIN_SMALL)


@pytest.fixture(scope="session")
def p212121_run(tmp_path_factory):
    """Simulated P 21 21 21 sweep (Eiger-like pixels, tilted panel, setting rotation)."""
    return _processed(tmp_path_factory, "p212121", "p212121", P212121_SMALL)


@pytest.fixture(scope="session")
def snase():
    if not (SNASE / "snase.expt").exists():
        pytest.skip("real SNase sweep not present in ../shared/data/snase")
    return SNASE


# -- the Snakemake workflow on a small simulated config ------------------------------------

SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]

SMALL_CONFIG = {
    "results": "results",
    "threads": 2,
    "simulations": {
        "tiny": {"preset": "insulin", "seed": 2, "size": [520, 420], "frames": 10, "bkg_frames": 4}
    },
    "datasets": {
        "tiny": {"expt": "resources/simulated/tiny/crystal/sweep.expt", "background": "tiny_bkg"}
    },
    "backgrounds": {"tiny_bkg": {"expt": "resources/simulated/tiny/background/sweep.expt"}},
    "import": {"chunks": [3, 0, 0]},  # 10 frames -> 4 frame-chunks (slab jobs split these)
    "find_peaks": {"count_threshold": 20, "sigma_cutoff": 3},
    "mask_peaks": {"sigma_cutoff": 3},
    "bin_background": {"bins": [2, 20, 20], "valid_range": [0, 200]},
}


def snakemake(workdir, *args, config=None):
    cfg = Path(workdir) / "config.yaml"
    if config is not None:
        cfg.write_text(yaml.safe_dump(config))
    cmd = [*SNAKEMAKE, "--directory", str(workdir), "--configfile", str(cfg), "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session")
def workflow_run(tmp_path_factory):
    """The whole workflow (simulate, import, peaks, mask, background, QC) run once."""
    wd = tmp_path_factory.mktemp("wf")
    proc = snakemake(wd, config=SMALL_CONFIG)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return wd


#: every array the small workflow makes, by file: two runs of it must agree on all of them
WORKFLOW_ARRAYS = [
    ("tiny/data.nxs", "entry/image_series/data"),
    ("tiny_bkg/bkg_data.nxs", "entry/image_series/data"),
    ("tiny/peaks.nxs", "entry/peak_model/sigma"),
    ("tiny/peaks.nxs", "entry/peaks/observed_px_y"),
    ("tiny/peaks.nxs", "entry/peaks/observed_px_x"),
    ("tiny/peaks.nxs", "entry/outliers/observed_phi"),
    ("tiny/mask.nxs", "entry/mask/signal"),
    ("tiny/mask.nxs", "entry/diffuseflow_mask/masked_pixels"),
    ("tiny_bkg/bkg_data_binned.nxs", "entry/binned_image_series/signal"),
    ("tiny/integrated.nxs", "entry/hkl_table/counts"),
    ("tiny/integrated.nxs", "entry/hkl_table/phi"),
    ("tiny/corrected.nxs", "entry/hkl_table/intensity"),
    ("maps/tiny/scales/tiny.nxs", "entry/scaling_model/u"),
    ("maps/tiny/merged.nxs", "entry/hkl_table/intensity"),
    ("maps/tiny/merged.nxs", "entry/hkl_table/group_0_intensity"),
    ("maps/tiny/map.nxs", "entry/intensity/signal"),
]


def assert_same_workflow_outputs(results_a: Path, results_b: Path):
    import h5py
    import numpy as np

    for path, dataset in WORKFLOW_ARRAYS:
        with h5py.File(results_a / path) as a, h5py.File(results_b / path) as b:
            np.testing.assert_array_equal(a[dataset][()], b[dataset][()], err_msg=path)
