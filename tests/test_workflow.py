"""The Snakemake workflow: lint, an end-to-end run on a small simulated config, exactly the
affected rules rerun after a config edit, and bad configs refused before any job runs."""

import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from conftest import ROOT, SMALL_CONFIG, assert_same_workflow_outputs, snakemake


def planned_jobs(proc) -> dict:
    """Job counts per rule from a dry run's 'Job stats' table."""
    counts = {}
    for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", proc.stdout + proc.stderr, re.M):
        if m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


def test_lint_is_clean():
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "Lints for" not in proc.stdout + proc.stderr


def test_end_to_end_outputs(workflow_run):
    wd = workflow_run
    # the test's config names its own dataset: the built-in demo is not merged in
    assert not (wd / "results" / "demo").exists()
    assert not (wd / "resources" / "simulated" / "demo").exists()
    for f in (
        "tiny/geometry.nxs",
        "tiny/data.nxs",
        "tiny/peaks.nxs",
        "tiny/mask.nxs",
        "tiny_bkg/bkg_data.nxs",
        "tiny_bkg/bkg_data_binned.nxs",
    ):
        assert (wd / "results" / f).exists(), f
    for rule in (
        "import_geometry",
        "import_data",
        "find_peaks",
        "mask_peaks",
        "bin_background",
        "import_background",
        "scale",
        "qc_scale",
    ):
        assert list((wd / "logs" / rule).glob("*.log")), rule
    for rule in ("import_data", "find_peaks", "mask_peaks", "bin_background", "scale"):
        assert list((wd / "benchmarks" / rule).glob("*.tsv")), rule
    with h5py.File(wd / "results/tiny/peaks.nxs") as f:
        import json

        params = json.loads(f.attrs["diffuseflow_parameters"])
        assert params["count_threshold"] == 20 and params["sigma_cutoff"] == 3
        assert f.attrs["diffuseflow_version"]


#: what reruns after the corrected table changes, after the scales do, after the merged one does
MERGE = ("merge", "map", "qc_map")
SCALE = ("scale", "qc_scale", *MERGE)
CORRECT = ("correct", *SCALE)


@pytest.mark.parametrize(
    "section, key, value, expected",
    [
        ("mask_peaks", "sigma_cutoff", 2.5, {"mask_peaks", "qc_dataset", "integrate", *CORRECT}),
        (
            "find_peaks",
            "count_threshold",
            25,
            {"find_peaks", "mask_peaks", "qc_dataset", "integrate", *CORRECT},
        ),
        (
            "bin_background",
            "bins",
            [4, 20, 20],
            {"bin_background", "qc_background", "qc_dataset", *CORRECT},
        ),
        # the crystal sweep's import and all after it; the background's import has no list
        (
            "import",
            "strong_pixel_floor",
            5,
            {"import_data", "find_peaks", "mask_peaks", "qc_dataset", "integrate", *CORRECT},
        ),
        ("integrate", "subdivide", [2, 2, 2], {"integrate", *CORRECT}),
        ("correct", "p1", True, set(CORRECT)),
        ("scale", "scaling", {"alpha": 0.5}, set(SCALE)),
        ("merge", "seed", 1, set(MERGE)),
        ("map", "limits", [-4, 4, -4, 4, -4, 4], {"map", "qc_map"}),
    ],
)
def test_editing_a_parameter_reruns_only_what_it_affects(
    workflow_run, section, key, value, expected
):
    wd = workflow_run
    cfg = yaml.safe_load(yaml.safe_dump(SMALL_CONFIG))
    cfg.setdefault(section, {})[key] = value
    jobs = planned_jobs(snakemake(wd, "--dry-run", config=cfg))
    assert set(jobs) - {"all"} == expected, jobs
    restore_config(wd)


def restore_config(wd):
    """Leave the session's workflow directory with its own config (a dry run records nothing
    else)."""
    (wd / "config.yaml").write_text(yaml.safe_dump(SMALL_CONFIG))


def test_a_rerun_of_the_same_config_does_nothing(workflow_run):
    nothing = planned_jobs(snakemake(workflow_run, "--dry-run", config=SMALL_CONFIG))
    assert set(nothing) <= {"all"} or not nothing


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c.update(colour="blue"), "colour"),
        (lambda c: c["find_peaks"].update(count_threshold=-3), "count_threshold"),
        (
            lambda c: c["datasets"].update({"bad name; rm -rf /": {"expt": "x.expt"}}),
            "bad name; rm -rf /",
        ),
        (lambda c: c["datasets"]["tiny"].update(background="nowhere"), "nowhere"),
        (lambda c: c["datasets"]["tiny"].update(expt="missing/sweep.expt"), "missing/sweep.expt"),
        (lambda c: c.update(slabs=0), "slabs"),
        (lambda c: c.update(find_peak={"count_threshold": 3}), "did you mean 'find_peaks'"),
        (lambda c: c["import"].update(chunk=[1, 0, 0]), "'import.chunk'; did you mean 'chunks'"),
        (lambda c: c["datasets"]["tiny"].update(frame=[1, 5]), "did you mean 'frames'"),
        (lambda c: c["datasets"]["tiny"].update(frames=[5, 1]), "needs first <= last"),
        (lambda c: c["datasets"]["tiny"].update(experiment=-1), "experiment"),
        (lambda c: c["find_peaks"].update(count_threshold=float("nan")), "not a finite number"),
        (lambda c: c["bin_background"].update(valid_range=[200, 0]), "needs LO < HI"),
        (
            lambda c: c["backgrounds"]["tiny_bkg"].update(bin_background={"valid_range": [5, 5]}),
            "backgrounds.tiny_bkg.bin_background.valid_range",
        ),
    ],
)
def test_bad_config_is_refused_before_any_job(tmp_path, mutate, message):
    cfg = yaml.safe_load(yaml.safe_dump(SMALL_CONFIG))
    mutate(cfg)
    proc = snakemake(tmp_path, "--dry-run", config=cfg)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "resources").exists()


def test_a_config_mistake_is_one_line_without_the_schema(tmp_path):
    cfg = yaml.safe_load(yaml.safe_dump(SMALL_CONFIG))
    cfg["datasets"]["tiny"]["find_peak"] = {"count_threshold": 3}
    proc = snakemake(tmp_path, "--dry-run", config=cfg)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out and "$schema" not in out
    errors = [line for line in out.splitlines() if line.startswith("config:")]
    assert errors == [
        "config: unknown key 'datasets.tiny.find_peak'; did you mean 'find_peaks'?"
    ], out


def test_editing_frames_reruns_that_dataset_only(workflow_run):
    wd = workflow_run
    cfg = yaml.safe_load(yaml.safe_dump(SMALL_CONFIG))
    cfg["datasets"]["tiny"]["frames"] = [2, 9]
    jobs = planned_jobs(snakemake(wd, "--dry-run", config=cfg))
    expected = {"import_geometry", "import_data", "find_peaks", "mask_peaks", "qc_dataset"}
    expected |= {"integrate", *CORRECT}
    assert set(jobs) - {"all"} == expected, jobs
    restore_config(wd)


def test_killed_snakemake_then_unlock_and_rerun_equals_a_clean_run(workflow_run, tmp_path):
    """kill -9 of Snakemake itself while jobs run: the running job is orphaned and finishes
    on its own; the next run needs --unlock, reruns what is incomplete and gives the same
    arrays as an uninterrupted run, with no temporary file left."""
    import os
    import signal
    import time

    from conftest import SNAKEMAKE

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(SMALL_CONFIG))
    cmd = [*SNAKEMAKE, "--directory", str(tmp_path), "--configfile", str(tmp_path / "config.yaml"),
           "--cores", "2"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if list((tmp_path / "logs").glob("import_*/*.log")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the workflow ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(5)  # let orphaned jobs finish or fail on their own
    locked = snakemake(tmp_path)  # a dry run needs no lock; a real one does
    assert locked.returncode != 0 and "unlock" in (locked.stdout + locked.stderr).lower()
    assert snakemake(tmp_path, "--unlock").returncode == 0
    rerun = snakemake(tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_same_workflow_outputs(workflow_run / "results", tmp_path / "results")
    assert not [p for p in (tmp_path / "results").rglob(".*") if ".tmp" in p.name]


def test_profiles_are_valid_yaml():
    for p in ("default", "slurm"):
        cfg = yaml.safe_load((ROOT / "profiles" / p / "config.yaml").read_text())
        assert isinstance(cfg, dict)
    slurm = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    assert slurm["executor"] == "slurm" and slurm["slurm-status-command"] == "squeue"


def test_multi_sweep_config_end_to_end(tmp_path):
    """config/multi.yaml: 4 crystal sweeps, 2 background sweeps (one shared by three),
    overrides, and one map of three sweeps scaled together (their own b, one d)."""
    cfg = yaml.safe_load((ROOT / "config" / "multi.yaml").read_text())
    proc = snakemake(tmp_path, config=cfg)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    res = tmp_path / "results"
    for name in ("sweep_a", "sweep_b", "sweep_c", "sweep_d"):
        assert (res / name / "mask.nxs").exists()
    for name in ("bkg_1", "bkg_2"):
        assert (res / name / "bkg_data_binned.nxs").exists()
    assert not (res / "sweep_b" / "bkg_data.nxs").exists()  # shared, imported once
    # a map per dataset, and the three insulin sweeps scaled and merged into one
    for name in ("sweep_a", "sweep_b", "sweep_c", "sweep_d", "insulin"):
        assert (res / "maps" / name / "map.nxs").exists()
        assert (res / "maps" / name / "qc" / "cc_half.png").exists()
        assert (res / "maps" / name / "scaling" / "qc" / "factors.png").exists()
    from diffuseflow.io.scales import read_factors
    from diffuseflow.io.tables import read_table

    trio = ("sweep_a", "sweep_b", "sweep_d")
    factors = {n: read_factors(res / "maps/insulin/scales" / f"{n}.nxs") for n in trio}
    assert all(set(f) == {"scaling", "detector"} for f in factors.values())
    # one detector response for all three; each sweep its own b, whose levels follow the
    # simulated overall scales 1.2 : 0.8 : 1 (drifts of +-6 % over the sweep beside them)
    np.testing.assert_array_equal(
        factors["sweep_a"]["detector"][1], factors["sweep_d"]["detector"][1]
    )
    level = {n: factors[n]["scaling"][1].mean() for n in trio}
    assert level["sweep_a"] / level["sweep_d"] == pytest.approx(1.2, rel=0.05), level
    assert level["sweep_b"] / level["sweep_d"] == pytest.approx(0.8, rel=0.05), level
    assert "detector" not in read_factors(res / "maps/sweep_a/scales/sweep_a.nxs")
    merged = read_table(res / "maps/insulin/merged.nxs")
    singles = sum(read_table(res / "maps" / n / "merged.nxs")["count"].sum() for n in trio)
    assert merged["count"].sum() == pytest.approx(singles, rel=0.01)
    with h5py.File(res / "maps/insulin/merged.nxs") as f:
        inputs = [i["path"] for i in json.loads(f.attrs["diffuseflow_inputs"])]
        assert [Path(p).parent.name for p in inputs[:3]] == list(trio)
        assert [Path(p).name for p in inputs[3:]] == [f"{n}.nxs" for n in trio]

    def params(path):
        with h5py.File(path) as f:
            return json.loads(f.attrs["diffuseflow_parameters"])

    assert params(res / "sweep_b/mask.nxs")["sigma_cutoff"] == 3.5
    assert params(res / "sweep_a/mask.nxs")["sigma_cutoff"] == 3
    assert params(res / "sweep_c/peaks.nxs")["count_threshold"] == 15
    assert params(res / "bkg_2/bkg_data_binned.nxs")["bins"] == [2, 20, 20]
    assert params(res / "bkg_1/bkg_data_binned.nxs")["bins"] == [4, 20, 20]
    with h5py.File(res / "sweep_a/data.nxs") as f:  # the 3-slab sweep, gathered
        assert "gathered from 3 slab jobs" in f.attrs["diffuseflow_program"]
    assert not (res / "sweep_a/slabs").exists() or not any((res / "sweep_a/slabs").iterdir())


def test_a_sweep_override_leaves_the_other_global_values(tmp_path):
    """Overriding one key of a section for one sweep keeps the global value of the others
    (the schema's defaults must not fill the override and hide them)."""
    cfg = yaml.safe_load(yaml.safe_dump(SMALL_CONFIG))
    cfg["find_peaks"] = {"count_threshold": 25, "sigma_cutoff": 2.5}
    cfg["datasets"]["tiny"]["find_peaks"] = {"sigma_cutoff": 2.75}
    proc = snakemake(tmp_path, "--dry-run", "--printshellcmds", config=cfg)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cmd = next(
        line for line in proc.stdout.splitlines() if "find_peaks.py" in line and "--count" in line
    )
    assert "--count_threshold 25 " in cmd and "--sigma_cutoff 2.75 " in cmd, cmd


def test_slab_jobs_in_the_workflow_equal_one_job(workflow_run, tmp_path):
    """slabs: 3 splits import, peak search and mask of both sweeps into slab jobs of whole
    frame-chunks; every output equals the one-job run's, and the parts are removed."""
    cfg = yaml.safe_load(yaml.safe_dump(SMALL_CONFIG))
    cfg["slabs"] = 3
    plan = planned_jobs(snakemake(tmp_path, "--dry-run", config=cfg))
    assert plan["import_slab"] == 6 and plan["find_peaks_slab"] == 3 and plan["mask_slab"] == 3
    assert plan["integrate_slab"] == 3
    proc = snakemake(tmp_path, config=cfg)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_workflow_outputs(tmp_path / "results", workflow_run / "results")
    assert not list((tmp_path / "results").glob("*/slabs/*.nxs"))
    for rule, n in (("import_slab", 6), ("find_peaks_slab", 3), ("mask_slab", 3),
                    ("integrate_slab", 3)):  # fmt: skip
        assert len(list((tmp_path / "benchmarks" / rule).glob("*.tsv"))) == n, rule


#: conda-forge names of the PyPI dependencies where they differ
CONDA_NAME = {"isal": "python-isal", "matplotlib": "matplotlib-base"}


def env_packages(path):
    deps = yaml.safe_load(path.read_text())["dependencies"]
    names = {re.split(r"[<>=! ]", d)[0] for d in deps if isinstance(d, str)}
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    return names, pip


def test_conda_envs_provide_what_the_package_needs():
    """envs/*.yaml (for --sdm conda; conda-forge is not reachable here, so no solve) carry
    every run-time dependency of pyproject.toml and install this checkout without deps."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = {
        CONDA_NAME.get(n, n) for n in (re.split(r"[<>=! ]", d)[0] for d in project["dependencies"])
    }
    for env in ("diffuseflow", "dxtbx"):
        names, pip = env_packages(ROOT / "envs" / f"{env}.yaml")
        assert needed <= names, (env, needed - names)
        assert pip == ["--no-deps", ".."]
    assert "dxtbx" in env_packages(ROOT / "envs" / "dxtbx.yaml")[0]


def test_dxtbx_reader_from_the_config(tmp_path):
    """import.reader: dxtbx reaches every import job (which then runs in envs/dxtbx.yaml)."""
    cfg = yaml.safe_load(yaml.safe_dump(SMALL_CONFIG))
    cfg["backgrounds"]["tiny_bkg"]["import"] = {"reader": "dxtbx"}
    proc = snakemake(tmp_path, "--dry-run", "--printshellcmds", config=cfg)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imports = [
        line for line in proc.stdout.splitlines() if "import_data.py" in line and "--reader" in line
    ]
    assert len(imports) == 2
    assert sum("--reader dxtbx" in line for line in imports) == 1
    assert sum("--reader builtin" in line for line in imports) == 1
