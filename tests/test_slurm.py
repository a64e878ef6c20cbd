"""The demo workflow through a real (single-node, loopback) SLURM with profiles/slurm.

Needs root and Debian's slurm packages (tests/slurm/cluster.sh installs them), so it runs only
when DIFFUSEFLOW_SLURM_TEST=1, as in CI. Checks that every job went through SLURM with the
resources its rule requests, and that the outputs equal a local run's.
"""

import os
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, SMALL_CONFIG, assert_same_workflow_outputs

pytestmark = pytest.mark.skipif(
    os.environ.get("DIFFUSEFLOW_SLURM_TEST") != "1",
    reason="set DIFFUSEFLOW_SLURM_TEST=1 to run (needs root; installs and starts SLURM)",
)

CLUSTER = ROOT / "tests" / "slurm" / "cluster.sh"


#: the small config with one thread per job: two jobs share the 2-CPU node at a time, and the
#: outputs must still equal the local run's (threads: 2) array for array
CONFIG = {**SMALL_CONFIG, "threads": 1}


def expected_requests(results) -> dict:
    """rule -> (cpus, mem MB, minutes) that each rule should request: fixed for the small
    rules, sized from the sweep (diffuseflow.resources) for the heavy ones at the config's
    threads."""
    from diffuseflow.resources import estimate, stack_shape

    crystal = stack_shape(results / "tiny/data.nxs")
    background = stack_shape(results / "tiny_bkg/bkg_data.nxs")

    def sized(step, shape):
        threads = CONFIG["threads"]
        r = estimate(step, shape, threads=threads)
        return (threads, r["mem_mb"], r["runtime"])

    return {
        "simulate_sweeps": (2, 4000, 30),
        "import_geometry": (1, 2000, 10),
        "import_data": sized("import", crystal),
        "import_background": sized("import", background),
        "find_peaks": sized("find_peaks", crystal),
        "mask_peaks": sized("mask_peaks", crystal),
        "bin_background": sized("bin", background),
        "qc_dataset": (1, 3000, 15),
        "qc_background": (1, 2000, 10),
        "integrate": sized("integrate", crystal),
        "correct": (1, 4000, 30),
        "scale": (1, 6000, 60),
        "qc_scale": (1, 4000, 15),
        "merge": (1, 4000, 30),
        "map": (1, 6000, 30),
        "qc_map": (1, 4000, 15),
    }


@pytest.fixture(scope="session")
def cluster():
    """The loopback cluster, up until the end of the session: with the slurm executor plugin
    installed, every Snakemake start runs `scontrol show config`, which waits 9 s when a SLURM
    client cannot reach its controller; stopping the cluster after this module would add
    that to each of the ~30 local Snakemake runs of the tests after it."""
    subprocess.run(["bash", str(CLUSTER), "up"], check=True, timeout=600)
    yield
    subprocess.run(["bash", str(CLUSTER), "down"], check=False, timeout=120)


def run_workflow(workdir, *extra):
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    cmd = ["timeout", "-k", "15", "900", sys.executable, "-m", "snakemake",
           "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), *extra]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]


def slurm_jobs():
    out = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i|%k|%C|%m|%l|%T"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    jobs = []
    for line in out.splitlines():
        jid, comment, cpus, mem, limit, state = line.split("|")
        jobs.append((int(jid), comment, int(cpus), mem, limit, state))
    return jobs


def minutes(limit: str) -> int:
    parts = [int(p) for p in limit.replace("-", ":").split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    h, m, _ = parts[-3:]
    return h * 60 + m


def test_workflow_through_slurm(cluster, tmp_path, workflow_run):
    before = max((j[0] for j in slurm_jobs()), default=0)
    # The plugin checks a job's status init-seconds after submitting it, then 10 s later each
    # time none has finished: the loopback cluster runs these jobs in ~5 s, so a first check at
    # 7 s finds most done (the profile's 2 s found none, and each job then waited 14 s).
    run_workflow(tmp_path / "slurm", "--profile", str(ROOT / "profiles" / "slurm"),
                 "--slurm-init-seconds-before-status-checks", "7")  # fmt: skip
    jobs = [j for j in slurm_jobs() if j[0] > before and j[1].startswith("rule_")]
    expected = expected_requests(tmp_path / "slurm/results")
    seen = {}
    for _, comment, cpus, mem, limit, state in jobs:
        rule = next(r for r in expected if comment.startswith(f"rule_{r}_"))
        assert state == "COMPLETED", (comment, state)
        seen[rule] = (cpus, int(mem.rstrip("M")), minutes(limit))
    # every rule of the workflow ran as a SLURM job, with the resources it requests
    assert seen == expected

    # the same arrays as the local run of the same config
    assert_same_workflow_outputs(tmp_path / "slurm/results", workflow_run / "results")
