"""Memory and run time requested per job (diffuseflow.resources): sized from the sweep, and
above what the jobs really use (max RSS from Snakemake's benchmark files)."""

import csv

import pytest

from diffuseflow.resources import estimate, expt_shape, stack_shape

PILATUS_6M = (2527, 2463)


def test_requests_grow_with_the_detector_but_not_with_the_sweep_length():
    small = estimate("import", (10, 512, 512))
    big = estimate("import", (100, *PILATUS_6M))
    assert big["mem_mb"] > small["mem_mb"] and big["runtime"] > small["runtime"]
    # slabs are capped in size: memory is flat in the number of frames, time is not
    long = estimate("import", (3600, *PILATUS_6M))
    assert long["mem_mb"] == estimate("import", (1000, *PILATUS_6M))["mem_mb"]
    assert long["runtime"] > big["runtime"]


def test_slab_jobs_and_threads_shorten_the_time_limit():
    one = estimate("mask_peaks", (3600, *PILATUS_6M), threads=1)
    assert estimate("mask_peaks", (3600, *PILATUS_6M), threads=4)["runtime"] < one["runtime"]
    split = estimate("mask_peaks", (3600, *PILATUS_6M), threads=1, slabs=10)
    assert split["runtime"] * 5 < one["runtime"] and split["mem_mb"] == one["mem_mb"]
    assert estimate("find_peaks", (1, 16, 16))["runtime"] == 10  # never below the floor


def test_missing_input_reads_as_not_known_yet(tmp_path):
    """Snakemake shows a resource as <TBD> when its function raises FileNotFoundError naming
    one of the job's inputs, and asks again once the input exists."""
    for fn in (expt_shape, stack_shape):
        with pytest.raises(FileNotFoundError) as err:
            fn(str(tmp_path / "later.nxs"))
        assert err.value.filename == str(tmp_path / "later.nxs")


STEP_OF_RULE = {
    "import_data": ("import", "tiny", "tiny/data.nxs"),
    "import_background": ("import", "tiny_bkg", "tiny_bkg/bkg_data.nxs"),
    "find_peaks": ("find_peaks", "tiny", "tiny/data.nxs"),
    "mask_peaks": ("mask_peaks", "tiny", "tiny/data.nxs"),
    "bin_background": ("bin", "tiny_bkg", "tiny_bkg/bkg_data.nxs"),
}


@pytest.mark.parametrize("rule", sorted(STEP_OF_RULE))
def test_requested_memory_covers_the_measured_peak(workflow_run, rule):
    step, sweep, data = STEP_OF_RULE[rule]
    with open(workflow_run / "benchmarks" / rule / f"{sweep}.tsv", newline="") as fh:
        max_rss = float(next(csv.DictReader(fh, delimiter="\t"))["max_rss"])
    shape = stack_shape(workflow_run / "results" / data)
    requested = estimate(step, shape, threads=2)["mem_mb"]
    assert 0 < max_rss < requested, (rule, max_rss, requested)
