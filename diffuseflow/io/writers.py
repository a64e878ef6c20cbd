"""Image writers for simulated sweeps and test fixtures: Pilatus miniCBF, SMV and Eiger HDF5.

Readers live in :mod:`diffuseflow.io.images`; these exist so that the simulator can produce
every format diffuseflow reads.
"""

from __future__ import annotations

import bz2
import gzip
import os
import shutil

import numpy as np


def compress_file(path: str, method: str | None) -> str:
    """Compress ``path`` in place to path.bz2 / path.gz; return the new name."""
    if not method:
        return path
    opener = {"bz2": bz2.open, "gz": gzip.open}[method]
    out = f"{path}.{method}"
    kw = {"compresslevel": 1} if method == "gz" else {"compresslevel": 9}
    with open(path, "rb") as src, opener(out, "wb", **kw) as dst:
        shutil.copyfileobj(src, dst, 1 << 22)
    os.unlink(path)
    return out


def pilatus_header(
    *, exposure, phi_start, phi_width, wavelength, distance_mm, beam_xy_px, pixel_mm
) -> str:
    """A Pilatus miniCBF header with the lines dxtbx needs (timestamp, Count_cutoff)."""
    return "\n".join(
        [
            "# Detector: PILATUS3 6M, S/N 60-0000 (diffuseflow simulator)",
            "# 2026-01-01T00:00:00.000",
            f"# Pixel_size {pixel_mm * 1e-3:.6f} m x {pixel_mm * 1e-3:.6f} m",
            "# Silicon sensor, thickness 0.000320 m",
            f"# Exposure_time {exposure:.7f} s",
            f"# Exposure_period {exposure:.7f} s",
            "# Count_cutoff 1048574 counts",
            f"# Wavelength {wavelength:.5f} A",
            f"# Detector_distance {distance_mm * 1e-3:.5f} m",
            f"# Beam_xy ({beam_xy_px[0]:.2f}, {beam_xy_px[1]:.2f}) pixels",
            f"# Start_angle {phi_start:.4f} deg.",
            f"# Angle_increment {phi_width:.4f} deg.",
        ]
    )


def write_cbf(path: str, data: np.ndarray, header: str = "", compress: str | None = None) -> str:
    import fabio.cbfimage

    img = fabio.cbfimage.CbfImage(data=np.ascontiguousarray(data, np.int32))
    img.header["_array_data.header_contents"] = header
    img.write(path)
    return compress_file(path, compress)


def write_smv(path: str, data: np.ndarray, header: dict, compress: str | None = None) -> str:
    """ADSC-style SMV: a 512-byte text header, then little-endian uint16 pixels."""
    ny, nx = data.shape
    fields = {
        "HEADER_BYTES": 512,
        "DIM": 2,
        "BYTE_ORDER": "little_endian",
        "TYPE": "unsigned_short",
        "SIZE1": nx,
        "SIZE2": ny,
        **header,
    }
    text = "{\n" + "".join(f"{k}={v};\n" for k, v in fields.items()) + "}\n"
    raw = text.encode().ljust(512, b" ")
    assert len(raw) == 512, "SMV header longer than 512 bytes"
    with open(path, "wb") as fh:
        fh.write(raw)
        fh.write(np.ascontiguousarray(data, "<u2").tobytes())
    return compress_file(path, compress)


def write_eiger(master: str, stack: np.ndarray, pixel_mask: np.ndarray | None = None) -> str:
    """Eiger-style master + one data file (bitshuffle/LZ4), linked as /entry/data/data_000001."""
    import h5py
    import hdf5plugin

    base = master[: -len("_master.h5")] if master.endswith("_master.h5") else master[:-3]
    data_path = f"{base}_data_000001.h5"
    with h5py.File(data_path, "w") as f:
        f.create_dataset(
            "entry/data/data",
            data=np.asarray(stack, np.uint32),
            chunks=(1,) + stack.shape[1:],
            **hdf5plugin.Bitshuffle(cname="lz4"),
        )
    with h5py.File(master, "w") as f:
        f["entry/data/data_000001"] = h5py.ExternalLink(
            os.path.basename(data_path), "entry/data/data"
        )
        if pixel_mask is not None:
            f.create_dataset(
                "entry/instrument/detector/pixel_mask", data=np.asarray(pixel_mask, np.uint32)
            )
    return master
