"""The real SNase sweep (96 x 1 deg SMV .img.bz2, CCD) from ../shared/data/snase."""

import bz2

import h5py
import numpy as np
import pytest
from conftest import run_script

BEAMSTOP = "rectangle=510,557,473,518"  # LUNUS' punch: x 510-556, y 473-517 (inclusive)


@pytest.fixture(scope="module")
def snase_import(snase, tmp_path_factory):
    d = tmp_path_factory.mktemp("snase")
    run_script(
        "import_data",
        snase / "snase.expt",
        "--outfile",
        d / "data.nxs",
        "--untrusted",
        BEAMSTOP,
        "--nproc",
        2,
    )
    run_script("import_geometry", snase / "snase.expt", "--outfile", d / "geometry.nxs")
    return d


def raw_frame(snase, k):
    with bz2.open(snase / "images" / f"snc_newhead_{k:05d}.img.bz2") as fh:
        return np.frombuffer(fh.read()[512:], "<u2").reshape(1024, 1024)


def test_snase_data_equals_raw_frames(snase, snase_import):
    with h5py.File(snase_import / "data.nxs") as f:
        data = f["entry/image_series/data"]
        assert data.shape == (96, 1024, 1024)
        phi = f["entry/image_series/phi"][()]
        np.testing.assert_allclose(phi, np.arange(96.0))  # frame k centred on PHI = k - 1
        for k in (1, 30, 59, 96):
            raw = raw_frame(snase, k).astype(np.int32)
            got = data[k - 1]
            invalid = (raw < 1) | (raw > 65534)  # trusted_range [1, 65534]
            invalid[473:518, 510:557] = True
            np.testing.assert_array_equal(got[~invalid], raw[~invalid])
            assert np.all(got[invalid] == -1)
            assert 44_000 < np.count_nonzero(raw == 0) < 45_000  # README: ~44,490 zeros


def test_snase_strong_pixels_index_near_integers(snase, snase_import):
    """Pixels far above background sit near integer hkl (README check A: ~0.88 within 0.2)."""
    from diffuseflow.algorithms.importing import GeometryFile

    geom = GeometryFile(snase_import / "geometry.nxs").sweep_geometry(False)
    with h5py.File(snase_import / "data.nxs") as f:
        frames = [5, 30, 60, 90]
        f_, y, x = [], [], []
        for k in frames:
            d = f["entry/image_series/data"][k - 1]
            yy, xx = np.nonzero(d > 5000)
            f_ += [k - 1] * len(yy)
            y += list(yy)
            x += list(xx)
    phi = geom.scan.frame_centres()[np.array(f_)]
    hkl = geom.hkl(phi, np.array(y), np.array(x))
    off = hkl - np.rint(hkl)
    share = np.mean(np.all(np.abs(off) < 0.2, axis=1))
    assert len(off) > 2000 and share > 0.8
