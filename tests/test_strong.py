"""The import's strong-pixel list (io/strong.py, filled by algorithms.peaks.scan_frame_strong)
stands in for find_peaks' pass over the stack: the same peak pixels, valid-pixel count and
value histogram as searching the decoded stack, for every count_threshold at or above the
floor; below it find_peaks reads the stack and says so."""

import re
import shutil

import h5py
import numpy as np
import pytest
from conftest import run_script

from diffuseflow.algorithms.peaks import (
    HIST_BINS,
    HIST_STRIDE,
    STRONG_FRACTION,
    listed_hot_pixels,
    scan_frame_strong,
    search_hot_pixels,
    suggest_threshold,
)
from diffuseflow.io import nexus, strong


def _quiet(*_):
    pass


@pytest.fixture(scope="module")
def chunked(insulin_run, tmp_path_factory):
    """The fixture sweep imported in chunks of 5 frames (6 histogram rows)."""
    data = tmp_path_factory.mktemp("strong") / "data.nxs"
    run_script("import_data", insulin_run / "crystal/sweep.expt", "--chunks", 5, 0, 0,
               "--nproc", 2, "--outfile", data)  # fmt: skip
    return data


@pytest.mark.parametrize("threshold", [10, 10.5, 17, 20, 55])
def test_the_list_equals_the_search_of_the_decoded_stack(chunked, threshold):
    with nexus.ImageSeries(chunked) as series:
        per_chunk = series.chunks[0]
        for frames in (None, (per_chunk, 3 * per_chunk)):
            listed, why = listed_hot_pixels(series, threshold, frames)
            assert why is None
            searched = search_hot_pixels(series, threshold, frames, log=_quiet)
            for key in ("frame", "iy", "ix", "hist"):
                np.testing.assert_array_equal(getattr(listed, key), getattr(searched, key))
            assert (listed.n_valid, listed.threshold, listed.frames) == (
                searched.n_valid,
                searched.threshold,
                searched.frames,
            )
            if threshold == 20 and frames is None:  # the fixture's search: thousands
                assert len(listed.frame) > 3000


def test_auto_threshold_from_the_import_histograms(chunked, tmp_path):
    """count_threshold auto reads the import's histograms of the sampled slabs: the same
    statistics as decoding those slabs."""
    with nexus.ImageSeries(chunked) as series:
        from_list = suggest_threshold(series)
        group = series.file[strong.GROUP]
        assert group["histogram"].shape == (len(series.slabs()), HIST_BINS)
    copy = _without_list(chunked, tmp_path / "nolist.nxs")
    with nexus.ImageSeries(copy) as series:
        assert suggest_threshold(series) == from_list


def _without_list(src, dst):
    shutil.copy(src, dst)
    with h5py.File(dst, "a") as f:
        del f[strong.GROUP]
    return dst


def test_find_peaks_reads_the_list_above_the_floor_and_the_stack_below(
    insulin_run, chunked, tmp_path
):
    geom = insulin_run / "geometry.nxs"
    nolist = _without_list(chunked, tmp_path / "nolist.nxs")

    def peaks(data, threshold, name):
        out = tmp_path / name
        proc = run_script("find_peaks", geom, data, "--count_threshold", threshold,
                          "--outfile", out)  # fmt: skip
        with h5py.File(out) as f:
            arrays = {k: f[f"entry/{k}"][()] for k in (
                "peak_model/r0", "peak_model/sigma", "peaks/observed_px_x",
                "peaks/observed_phi", "outliers/observed_px_y", "diffuseflow_search/histogram",
                "diffuseflow_search/n_valid")}  # fmt: skip
        return proc.stdout, arrays

    for threshold in (20, 12):
        log_listed, listed = peaks(chunked, threshold, f"listed{threshold}.nxs")
        log_stack, stack = peaks(nolist, threshold, f"stack{threshold}.nxs")
        assert "from the import's strong-pixel list (no pass over the stack)" in log_listed
        assert "has no strong-pixel list" in log_stack and "searching the stack" in log_stack
        for key in listed:
            np.testing.assert_array_equal(listed[key], stack[key], err_msg=key)
    log_low, _ = peaks(chunked, 8, "below.nxs")
    assert re.search(r"count_threshold 8 is below the strong-pixel floor 10 .*searching the "
                     r"stack", log_low), log_low  # fmt: skip


def test_the_floor_rises_where_too_many_pixels_are_bright():
    """A CCD-like frame (counts ~200 ADU everywhere): the floor rises so that about
    STRONG_FRACTION of the pixels are listed; every pixel above the frame's floor is listed, in
    C order; n_valid and the sampled histogram are exact."""
    rng = np.random.default_rng(7)
    frame = rng.poisson(200, (700, 900)).astype(np.int32)
    frame[100:120] = -1
    frame[5, 7] = 900_000  # beyond the histogram's last bin
    floor, n_valid, (iy, ix, counts), hist = scan_frame_strong(frame, 10.0)
    assert floor > 200
    assert 0.5 * STRONG_FRACTION < len(iy) / n_valid < 2 * STRONG_FRACTION
    want_y, want_x = np.nonzero(frame > floor)
    np.testing.assert_array_equal(iy, want_y)
    np.testing.assert_array_equal(ix, want_x)
    np.testing.assert_array_equal(counts, frame[want_y, want_x])
    assert n_valid == int((frame >= 0).sum())
    sampled = frame[:, ::HIST_STRIDE]
    sampled = sampled[sampled >= 0]
    np.testing.assert_array_equal(
        hist, np.bincount(np.minimum(sampled, HIST_BINS - 1), minlength=HIST_BINS)
    )
    # a photon-counting frame (most pixels 0-3 counts): the requested floor stands
    quiet = rng.poisson(1.0, (700, 900)).astype(np.int32)
    quiet[rng.integers(0, 700, 300), rng.integers(0, 900, 300)] = 50
    floor, _, (iy, ix, counts), _ = scan_frame_strong(quiet, 10.0)
    assert floor == 10.0 and (counts > 10).all() and len(iy) == int((quiet > 10).sum())
    # 0.3 % bright pixels: more than the fraction, fewer than the first pass holds; the
    # floor rises and the pixels above it are picked from those found
    bright = quiet.copy()
    pick = rng.choice(bright.size, int(0.003 * bright.size), replace=False)
    bright.reshape(-1)[pick] = rng.integers(20, 400, len(pick))
    floor, _, (iy, ix, counts), _ = scan_frame_strong(bright, 10.0)
    assert floor > 20
    want_y, want_x = np.nonzero(bright > floor)
    np.testing.assert_array_equal(iy, want_y)
    np.testing.assert_array_equal(ix, want_x)
    np.testing.assert_array_equal(counts, bright[want_y, want_x])


def test_a_slab_job_lists_only_its_frames(insulin_run, tmp_path):
    part = tmp_path / "part.nxs"
    run_script("import_data", insulin_run / "crystal/sweep.expt", "--chunks", 5, 0, 0,
               "--slab", 1, 3, "--outfile", part)  # fmt: skip
    with h5py.File(part) as f:
        g = f[strong.GROUP]
        floor = g["floor"][()]
        a, b = (int(v) for v in f.attrs["diffuseflow_partial_frames"])
        assert np.isfinite(floor[a:b]).all() and np.isnan(np.delete(floor, range(a, b))).all()
        assert set(np.unique(g["frame"][()])) <= set(range(a, b))
    with nexus.ImageSeries(part) as series:
        hot, why = listed_hot_pixels(series, 20)
    assert hot is None and "misses frames" in why


def test_a_stack_rewritten_after_the_import_is_searched_again(chunked, tmp_path):
    """The list records the stack's chunk layout: frames rewritten later (here one frame set
    to 100 counts everywhere) are not answered from the stale list."""
    edited = tmp_path / "edited.nxs"
    shutil.copy(chunked, edited)
    with h5py.File(edited, "r+") as f:
        d = f["entry/image_series/data"]
        d[7] = np.full(d.shape[1:], 100, np.int32)
    with nexus.ImageSeries(edited) as series:
        hot, why = listed_hot_pixels(series, 20)
        assert hot is None and "rewritten after the import" in why
        searched = search_hot_pixels(series, 20, log=_quiet)
    # every pixel of the rewritten frame, invalid ones included, is now above the threshold
    assert (searched.frame == 7).sum() == series.shape[1] * series.shape[2]
