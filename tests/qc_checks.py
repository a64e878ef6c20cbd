"""Checks shared by the QC tests: figures are real PNGs, summaries equal the .nxs files."""

import csv

import h5py
import numpy as np
import pytest
from matplotlib.image import imread

CRYSTAL_FIGURES = ["counts", "frames", "mahalanobis", "masked_fraction", "offsets"]
BACKGROUND_FIGURES = ["background", "radial"]


def check_png(path):
    """Readable PNG, at least 500 x 300 px, with content (not a blank canvas)."""
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] >= 300 and img.shape[1] >= 500, (path, img.shape)
    grey = img[..., :3].mean(axis=2)
    assert np.mean(grey < 0.9) > 0.01, f"{path}: almost blank"


def summary(path):
    with open(path, newline="") as fh:
        return {r["quantity"]: r["value"] for r in csv.DictReader(fh, delimiter="\t")}


def expected_crystal_numbers(sweep):
    with h5py.File(sweep / "peaks.nxs") as f:
        sigma = f["entry/peak_model/sigma"][()]
        out = {
            "peak pixels": len(f["entry/peaks/observed_phi"]),
            "outliers": len(f["entry/outliers/observed_phi"]),
            **{f"r0 {c}": v for c, v in zip("hkl", f["entry/peak_model/r0"][()], strict=True)},
        }
    out.update(
        {f"semi-axis {k}": v for k, v in enumerate(np.linalg.svd(sigma, compute_uv=False), 1)}
    )
    with h5py.File(sweep / "mask.nxs") as f:
        mask = f["entry/mask/signal"][()]
        out["masked"] = 100.0 * np.count_nonzero(mask) / mask.size
        per_frame = f["entry/diffuseflow_mask/masked_pixels"][()]
        np.testing.assert_array_equal(per_frame, np.count_nonzero(mask, axis=(1, 2)))
    with h5py.File(sweep / "data.nxs") as f:
        n, ny, nx = f["entry/image_series/data"].shape
    out["frames"] = n
    out["detector size"] = f"{ny} x {nx}"
    return out


def assert_summary_matches(table, expected):
    for key, want in expected.items():
        got = table[key]
        if isinstance(want, str):
            assert got == want, key
        elif isinstance(want, (int, np.integer)):
            assert int(got) == want, key
        else:
            assert float(got) == pytest.approx(float(want), rel=1e-12, abs=1e-15), key
