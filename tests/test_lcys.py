"""The real 15-frame Pilatus 2M sweep (L-cysteine, DLS I19) through the whole workflow with
config/lcys.yaml: its real DIALS indexed.expt holds four sweeps and a 1700-image scan, so the
dataset needs `experiment` and `frames`; its images are the archived .cbf.gz beside the names
the .expt gives. Checks: data.nxs equals fabio's read of every frame, and the spots are inside
the mask (pixels and whole spots, independently of the peak search), with its QC page."""

from __future__ import annotations

import fabio
import h5py
import numpy as np
import pytest
import yaml
from conftest import ROOT, snakemake
from realdata import REAL, need
from scipy import ndimage

LCYS = REAL / "lcys"


@pytest.fixture(scope="module")
def lcys_run(tmp_path_factory):
    need(LCYS / "indexed.expt")
    d = tmp_path_factory.mktemp("lcys_wf")
    cfg = yaml.safe_load((ROOT / "config" / "lcys.yaml").read_text())
    cfg["datasets"]["lcys"]["expt"] = str(LCYS / "indexed.expt")
    proc = snakemake(d, config=cfg)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the user's config names its own dataset: the built-in demo does not run with it
    assert not (d / "results" / "demo").exists() and not (d / "resources").exists()
    return d / "results" / "lcys"


def test_lcys_data_equals_the_raw_frames(lcys_run):
    with h5py.File(lcys_run / "data.nxs") as f:
        data = f["entry/image_series/data"]
        assert data.shape == (15, 1679, 1475)
        phi = f["entry/image_series/phi"][()]
        for k in range(15):
            raw = fabio.open(str(LCYS / f"l-cyst_01_{k + 1:05d}.cbf.gz")).data
            frame = data[k]
            assert (frame[raw < 0] == -1).all()
            np.testing.assert_array_equal(frame[raw >= 0], raw[raw >= 0])
    # the .expt's scan starts at -145 deg in 0.1 deg steps; frame centres
    np.testing.assert_allclose(phi, -145 + 0.1 * (np.arange(15) + 0.5))


def test_lcys_spots_are_inside_the_mask(lcys_run):
    with h5py.File(lcys_run / "data.nxs") as f:
        data = f["entry/image_series/data"][()]
    with h5py.File(lcys_run / "mask.nxs") as f:
        mask = f["entry/mask/signal"][()]
    with h5py.File(lcys_run / "peaks.nxs") as f:
        n_peak = f["entry/peaks/observed_phi"].shape[0]
    assert n_peak > 500  # a real crystal: hundreds of strong pixels in 1.5 degrees
    assert mask.mean() < 0.01  # a small-molecule crystal: Bragg spots are a tiny fraction
    # independent of the peak search: bright pixels and whole spots (connected >= 5 counts)
    bright = data >= 10
    assert (mask & bright).sum() / bright.sum() > 0.99
    spots, n = ndimage.label(data >= 5)
    size = np.bincount(spots.ravel())[1:]
    hit = ndimage.maximum(mask.astype(np.int8), spots, np.arange(1, n + 1))
    assert (size >= 3).sum() >= 40 and np.all(hit[size >= 3] > 0)


def test_lcys_qc_page(lcys_run):
    qc = lcys_run / "qc"
    for fig in ("offsets", "mahalanobis", "counts", "frames", "masked_fraction"):
        assert (qc / f"{fig}.png").stat().st_size > 10_000
    summary = (qc / "summary.tsv").read_text()
    assert "P 1" in summary
