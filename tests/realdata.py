"""Real detector files from ../shared/data (never copied into the repository) and the pieces
tests build around them: minimal .expt files for single images, and Eiger/NXmx master files
following the real layouts (DECTRIS 2016 Eiger 9M, Diamond 2019 NXmx, nexgen 2024 with a
_meta.h5, the DECTRIS 2024 writer's 4-D data) for data files whose masters are not public."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL = SHARED / "real-detectors"
DIALS_REFL = SHARED / "dials-refl"

EIGER1 = "eiger1_testmode10_2datafiles_4images_{codec}_data_00000{k}.h5"
EIGER2 = "eiger2_simread7_2datafiles_4images_{codec}_data_00000{k}.h5"


def need(path: Path) -> Path:
    """``path``, or skip the test cleanly when the shared data are not on this machine."""
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


def single_image_expt(
    out: Path,
    template: str,
    image_size: tuple[int, int],
    n_images: int = 1,
    trusted_range=(-1, 1_000_000),
    pixel_size: float = 0.172,
    mask_rectangles=(),
    single_file: bool = False,
) -> Path:
    """A minimal DIALS .expt (ImageSequence, no crystal) for ``n_images`` images of
    ``template`` (relative to ``out``'s folder or absolute); image_size = (n_fast, n_slow)."""
    nx, ny = image_size
    iset = {"__id__": "ImageSequence", "template": template}
    if single_file:
        iset["single_file_indices"] = list(range(n_images))
    doc = {
        "__id__": "ExperimentList",
        "experiment": [
            {"__id__": "Experiment", "beam": 0, "detector": 0, "goniometer": 0, "scan": 0,
             "imageset": 0}
        ],
        "imageset": [iset],
        "beam": [{"direction": [0.0, 0.0, 1.0], "wavelength": 0.9795}],
        "detector": [
            {
                "panels": [
                    {
                        "name": "Panel",
                        "type": "SENSOR_PAD",
                        "fast_axis": [1.0, 0.0, 0.0],
                        "slow_axis": [0.0, -1.0, 0.0],
                        "origin": [-nx * pixel_size / 2, ny * pixel_size / 2, -200.0],
                        "pixel_size": [pixel_size, pixel_size],
                        "image_size": [nx, ny],
                        "trusted_range": list(trusted_range),
                        "thickness": 0.45,
                        "material": "Si",
                        "mu": 3.96,
                        "mask": [list(r) for r in mask_rectangles],
                        "px_mm_strategy": {"type": "SimplePxMmStrategy"},
                    }
                ]
            }
        ],
        "goniometer": [{"rotation_axis": [1.0, 0.0, 0.0]}],
        "scan": [
            {
                "image_range": [1, n_images],
                "oscillation": [0.0, 0.1],
                "exposure_time": [0.1] * n_images,
            }
        ],
    }  # fmt: skip
    out.write_text(json.dumps(doc))
    return out


def link_beside(folder: Path, names, source: Path = REAL / "h5") -> list[Path]:
    """Symlink real data files into ``folder`` (beside a master built there)."""
    made = []
    for name in names:
        dst = folder / name
        if not dst.exists():
            os.symlink(need(source / name), dst)
        made.append(dst)
    return made


def read_stack(paths, key="entry/data/data") -> np.ndarray:
    """Frames of the data files in order, read with plain h5py (the independent read)."""
    frames = []
    for p in paths:
        with h5py.File(p, "r") as f:
            frames.append(f[key][()])
    return np.concatenate(frames)


def _detector(f: h5py.File, shape, bit_depth=None, mask=None, where="detectorSpecific"):
    det = f.require_group("entry/instrument/detector")
    det.attrs["NX_class"] = "NXdetector"
    spec = det.require_group("detectorSpecific")
    spec.create_dataset("x_pixels_in_detector", data=np.uint32(shape[1]))
    spec.create_dataset("y_pixels_in_detector", data=np.uint32(shape[0]))
    if bit_depth is not None:
        det.create_dataset("bit_depth_image", data=np.int32(bit_depth))
        det.create_dataset("bit_depth_readout", data=np.int32(12))
        det.create_dataset("saturation_value", data=np.int64(2**bit_depth - 1))
    if mask is not None:
        target = spec if where == "detectorSpecific" else det
        target.create_dataset("pixel_mask", data=mask.astype(np.uint32), **hdf5plugin.LZ4())
    return det


def dectris_master(
    folder: Path, data_names, shape, bit_depth=16, mask=None, absolute_links=False, name=None
) -> Path:
    """A DECTRIS (firmware 1.6) master: /entry/data/data_00000K external links to the data
    files, bit_depth_image and saturation_value in the detector group, the pixel mask in
    detectorSpecific (as the real Eiger 9M master keeps them)."""
    master = folder / (name or "series_master.h5")
    with h5py.File(master, "w") as f:
        f.attrs["NX_class"] = "NXroot"
        data = f.require_group("entry/data")
        data.attrs["NX_class"] = "NXdata"
        for k, n in enumerate(data_names, start=1):
            target = str(Path("/beamline/moved/away") / n) if absolute_links else n
            data[f"data_{k:06d}"] = h5py.ExternalLink(target, "entry/data/data")
        _detector(f, shape, bit_depth, mask, "detectorSpecific")
    return master


def diamond_master(folder: Path, data_name: str, n_frames: int, shape, mask=None) -> Path:
    """Diamond's 2019 NXmx layout (Therm_6_2.nxs): data_000001 external link to the data
    file's /data, an int64 virtual dataset /entry/data/data over it, saturation_value and no
    bit depth; a legacy mask (if given) at detector/pixel_mask, as written (maybe transposed)."""
    master = folder / "sweep.nxs"
    with h5py.File(master, "w") as f:
        data = f.require_group("entry/data")
        data["data_000001"] = h5py.ExternalLink(data_name, "/data")
        layout = h5py.VirtualLayout(shape=(n_frames, *shape), dtype=np.int64)
        layout[:] = h5py.VirtualSource(data_name, "/data", shape=(n_frames, *shape))
        data.create_virtual_dataset("data", layout, fillvalue=0)
        det = f.require_group("entry/instrument/detector")
        det.create_dataset("saturation_value", data=np.int64(65535))
        if mask is not None:
            det.create_dataset("pixel_mask", data=mask.astype(np.int32))
    return master


def nexgen_master(folder: Path, stem: str, n_frames: int, shape, with_vds=True) -> Path:
    """nexgen's 2024 layout (xrc_209_master.h5): data_000001 -> STEM_000001.h5:data, a uint16
    VDS /entry/data/data, and pixel_mask / bit_depth_image as external links into
    STEM_meta.h5 (mask, _dectris/bit_depth_image)."""
    master = folder / f"{stem}_master.h5"
    data_name = f"{stem}_000001.h5"
    with h5py.File(master, "w") as f:
        data = f.require_group("entry/data")
        data["data_000001"] = h5py.ExternalLink(data_name, "data")
        if with_vds:
            layout = h5py.VirtualLayout(shape=(n_frames, *shape), dtype=np.uint16)
            layout[:] = h5py.VirtualSource(data_name, "data", shape=(n_frames, *shape))
            data.create_virtual_dataset("data", layout, fillvalue=0)
        det = f.require_group("entry/instrument/detector")
        det["pixel_mask"] = h5py.ExternalLink(f"{stem}_meta.h5", "mask")
        det["bit_depth_image"] = h5py.ExternalLink(f"{stem}_meta.h5", "_dectris/bit_depth_image")
        det.create_dataset("saturation_value", data=np.int64(46051))
    return master


def nexgen_files(folder: Path, stem: str, frames: np.ndarray, mask=None, bit_depth=16):
    """The data file and _meta.h5 that nexgen's master links to."""
    with h5py.File(folder / f"{stem}_000001.h5", "w") as f:
        f.create_dataset(
            "data", data=frames, chunks=(1, *frames.shape[1:]), **hdf5plugin.Bitshuffle()
        )
    if mask is not None:
        with h5py.File(folder / f"{stem}_meta.h5", "w") as f:
            f.create_dataset("mask", data=mask.astype(np.uint32))
            f.create_dataset("_dectris/bit_depth_image", data=np.uint32(bit_depth))


def dectris2024_file(folder: Path, channels: np.ndarray, masks, names=None) -> Path:
    """The DECTRIS 2024 file writer's single file: /entry/data/data (image, channel, y, x),
    /entry/data/channel names, one NXdetector_channel group per channel with its pixel_mask."""
    path = folder / "dectris2024_master.h5"
    n_ch = channels.shape[1]
    names = names or [f"threshold_{k + 1}" for k in range(n_ch)]
    with h5py.File(path, "w") as f:
        data = f.require_group("entry/data")
        data.attrs["axes"] = ["image_id", "channel", ".", "."]
        data.create_dataset(
            "data", data=channels, chunks=(1, 1, *channels.shape[2:]), **hdf5plugin.Bitshuffle()
        )
        data.create_dataset("channel", data=np.array(names, dtype="S"))
        det = f.require_group("entry/instrument/detector")
        det.create_dataset("bit_depth_image", data=np.uint32(channels.dtype.itemsize * 8))
        for name, m in zip(names, masks, strict=True):
            g = det.require_group(f"{name}_channel")
            g.attrs["NX_class"] = "NXdetector_channel"
            g.create_dataset("pixel_mask", data=m.astype(np.uint32))
    return path


def copy_real(name: str, folder: Path, sub="h5") -> Path:
    """A copy of a real master file (its missing pieces are then built beside it)."""
    dst = folder / name
    shutil.copyfile(need(REAL / sub / name), dst)
    return dst


def legacy_scan(scan: dict) -> dict:
    """A scan model in the legacy encoding (older DIALS; all dxtbx 3.11 reads): oscillation
    [start, width], exposure_time and epochs at top level instead of under ``properties``.
    Converted in place; a scan already legacy is left as it is."""
    props = scan.pop("properties", None)
    if props:
        osc = props["oscillation"]
        scan["oscillation"] = [osc[0], osc[1] - osc[0]]
        scan["exposure_time"] = props["exposure_time"]
        scan["epochs"] = props["epochs"]
    return scan
