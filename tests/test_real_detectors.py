"""Real detector files (../shared/data/real-detectors): each imports with the same values as
an independent fabio/h5py read, gaps, masked and marker pixels -1; refused files get one line
naming them and leave no output. Masters whose data files are not public are completed here
following the real layouts (tests/realdata.py)."""

from __future__ import annotations

import fabio
import h5py
import numpy as np
import pytest
from conftest import run_script
from realdata import (
    EIGER1,
    EIGER2,
    REAL,
    copy_real,
    dectris2024_file,
    dectris_master,
    diamond_master,
    link_beside,
    need,
    nexgen_files,
    nexgen_master,
    read_stack,
    single_image_expt,
)


def imported(tmp_path, expt, *args, name="data.nxs"):
    out = tmp_path / name
    run_script("import_data", expt, "--outfile", out, *args)
    with h5py.File(out, "r") as f:
        return f["entry/image_series/data"][()]


def refused(tmp_path, expt, *args, script="import_data"):
    """Run a tool that must refuse: exit 2, one line, no traceback, no output or temp file."""
    out = tmp_path / "refused.nxs"
    proc = run_script(script, expt, *args, "--outfile", out, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".refused*"))
    return lines[0]


# ------------------------------------------------------------------------------------------
# CBF and SMV: the values fabio reads, negative Pilatus markers and trusted-range excess -1

CBFS = {  # file: (template, (n_fast, n_slow), gap pixels (-1), bad pixels (-2))
    "DLS_I03_smargon_0001.cbf.gz": ("cbf/DLS_I03_smargon_####.cbf.gz", (2463, 2527), 526101, 1213),
    "DLS_I23_P12M_thau_00001.cbf.gz": (
        "cbf/DLS_I23_P12M_thau_#####.cbf.gz", (2463, 5071), 1094073, 98985
    ),
    "dlsnxs2cbf_therm_0001.cbf.gz": (
        "cbf/dlsnxs2cbf_therm_####.cbf.gz", (4148, 4362), 1250824, 2496
    ),
    # the .expt names the plain .cbf; the archived .cbf.gz beside it is read
    "l-cyst_01_00001.cbf.gz": ("lcys/l-cyst_01_#####.cbf", (1475, 1679), 197365, 267),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CBFS))
def test_real_cbf_imports_as_fabio_reads_it(tmp_path, name):
    template, size, gaps, bad = CBFS[name]
    src = need(REAL / template.split("/")[0] / name)
    raw = fabio.open(str(src)).data
    assert (raw == -1).sum() == gaps and (raw == -2).sum() == bad  # the real file's markers
    hi = int(np.percentile(raw, 99.99))  # a trusted maximum some real pixels exceed
    expt = single_image_expt(tmp_path / "x.expt", str(REAL / template), size, trusted_range=(0, hi))
    data = imported(tmp_path, expt)[0]
    expected = np.where((raw < 0) | (raw > hi), -1, raw)
    np.testing.assert_array_equal(data, expected)
    assert (data == -1).sum() == gaps + bad + (raw > hi).sum()


SMVS = {
    "TIMEPIX_SU_512-stdgoni_0001.img": (512, 512),
    "TIMEPIX_SU_516-stdgoni_0001.img": (516, 516),
    "simtbx_FormatSMVJHSim_001.img": (1024, 1024),
}


@pytest.mark.parametrize("name", sorted(SMVS))
def test_real_smv_imports_as_fabio_reads_it(tmp_path, name):
    src = need(REAL / "smv" / name)
    raw = fabio.open(str(src)).data.astype(np.int64)
    template = str(src).replace("0001.img", "####.img").replace("_001.img", "_###.img")
    expt = single_image_expt(tmp_path / "x.expt", template, SMVS[name], trusted_range=(1, 65534))
    data = imported(tmp_path, expt)[0]
    np.testing.assert_array_equal(data, np.where(raw < 1, -1, raw))
    assert (data == -1).sum() == (raw < 1).sum() > 0


# ------------------------------------------------------------------------------------------
# Eiger data files written by real detectors, behind masters in the real layouts


@pytest.mark.parametrize("codec", ["bslz4", "lz4"])
def test_eiger1_marker_pixels_are_invalid_whatever_the_trusted_range(tmp_path, codec):
    """The EIGER 1M files mark gaps and dead pixels 65535. DIALS 2.x .expt files say trusted
    [-1, 65535], so only the bit-depth rule keeps those markers out of the counts."""
    names = [EIGER1.format(codec=codec, k=k) for k in (1, 2)]
    files = link_beside(tmp_path, names)
    raw = read_stack(files)  # 4 frames, uint16
    n_markers = int((raw >= 65534).sum())
    assert n_markers == 4 * 38164  # the detector's own gap pixels, in every frame
    master = dectris_master(tmp_path, names, raw.shape[1:], bit_depth=16)
    expt = single_image_expt(
        tmp_path / "x.expt", str(master), (1030, 1065), 4, (-1, 65535), 0.075, single_file=True
    )
    data = imported(tmp_path, expt)
    assert data.max() < 65534 and (data == -1).sum() == n_markers
    np.testing.assert_array_equal(data, np.where(raw >= 65534, -1, raw.astype(np.int32)))


@pytest.mark.parametrize("codec", ["bslz4", "lz4", "bslz4_uint8", "bslz4_uint32"])
def test_eiger2_files_with_pixel_mask_in_detector_specific(tmp_path, codec):
    names = [EIGER2.format(codec=codec, k=k) for k in (1, 2)]
    files = link_beside(tmp_path, names)
    raw = read_stack(files)
    bits = raw.dtype.itemsize * 8
    rng = np.random.default_rng(4)
    mask = rng.random(raw.shape[1:]) < 0.01
    master = dectris_master(tmp_path, names, raw.shape[1:], bit_depth=bits, mask=mask)
    expt = single_image_expt(
        tmp_path / "x.expt", str(master), (1028, 512), 4, (-1, 1e9), 0.075, single_file=True
    )
    data = imported(tmp_path, expt)
    expected = np.where(mask[None] | (raw >= 2**bits - 2), -1, raw.astype(np.int64))
    np.testing.assert_array_equal(data, expected)
    assert (data == -1).sum() == 4 * mask.sum()


@pytest.mark.parametrize(
    "codec, direct",
    [("bslz4", True), ("bslz4_uint8", True), ("bslz4_uint32", True), ("lz4", False)],
)
def test_real_eiger_chunks_decode_directly_as_hdf5_decodes_them(tmp_path, codec, direct):
    """The real EIGER2 bitshuffle/LZ4 data files are read chunk by chunk through bitshuffle's
    decoder (in parallel threads); LZ4-only files go through HDF5's filter. Either way the
    frames are the ones HDF5's own filter pipeline decodes, value for value."""
    from diffuseflow.io.images import _Hdf5Stack

    names = [EIGER2.format(codec=codec, k=k) for k in (1, 2)]
    raw = read_stack(link_beside(tmp_path, names))
    stack = _Hdf5Stack(str(dectris_master(tmp_path, names, raw.shape[1:])))
    assert stack._direct == [direct, direct]
    for i in range(4):
        got = stack.read(i)
        assert got.dtype == raw.dtype
        np.testing.assert_array_equal(got, raw[i])


def test_eiger_bitshuffle_without_lz4_is_left_to_hdf5(tmp_path):
    """bitshuffle + zstd (a DECTRIS writer option): the chunk decoder reads LZ4 only, so such
    a file is read through HDF5's filter, not misread."""
    import hdf5plugin

    from diffuseflow.io.images import _Hdf5Stack

    raw = read_stack(link_beside(tmp_path, [EIGER2.format(codec="bslz4", k=1)]))
    with h5py.File(tmp_path / "zstd_data_000001.h5", "w") as f:
        f.create_dataset("entry/data/data", data=raw, chunks=(1, *raw.shape[1:]),
                         **hdf5plugin.Bitshuffle(cname="zstd"))  # fmt: skip
    stack = _Hdf5Stack(str(dectris_master(tmp_path, ["zstd_data_000001.h5"], raw.shape[1:])))
    assert stack._direct == [False]
    np.testing.assert_array_equal(stack.read(1), raw[1])


def test_damaged_eiger_chunk_is_one_line(tmp_path):
    """A damaged chunk in a real bitshuffle/LZ4 data file (a block's stored length): refused
    naming the file and the frame. HDF5's own filter (hdf5plugin 7.1) crashes the process on
    this chunk (segmentation fault, measured). Detector files carry no checksum: damage that
    still parses as LZ4 cannot be found, by HDF5's filter either."""
    import shutil

    names = [EIGER2.format(codec="bslz4", k=k) for k in (1, 2)]
    for n in names:
        shutil.copyfile(need(REAL / "h5" / n), tmp_path / n)
    with h5py.File(tmp_path / names[1], "r") as f:
        info = f["entry/data/data"].id.get_chunk_info(1)
    with open(tmp_path / names[1], "r+b") as fh:  # frame 4's first LZ4 block length
        fh.seek(info.byte_offset + 12)
        fh.write(b"\x7f\xff\xff\xff")
    master = dectris_master(tmp_path, names, (512, 1028))
    expt = single_image_expt(
        tmp_path / "x.expt", str(master), (1028, 512), 4, (-1, 1e9), 0.075, single_file=True
    )
    line = refused(tmp_path, expt)
    assert names[1] in line and "frame 2, row 1, column 1 (from 1)" in line, line
    assert "corrupt" in line


def test_links_to_moved_data_files_are_found_beside_the_master(tmp_path):
    """Real masters hold absolute paths of the beamline's disk; the data moved with them."""
    names = [EIGER2.format(codec="bslz4", k=k) for k in (1, 2)]
    files = link_beside(tmp_path, names)
    master = dectris_master(tmp_path, names, (512, 1028), absolute_links=True)
    expt = single_image_expt(
        tmp_path / "x.expt", str(master), (1028, 512), 4, (-1, 1e9), 0.075, single_file=True
    )
    np.testing.assert_array_equal(imported(tmp_path, expt), read_stack(files))


def test_single_file_indices_and_frames_pick_frames_across_data_files(tmp_path):
    names = [EIGER2.format(codec="bslz4", k=k) for k in (1, 2)]
    raw = read_stack(link_beside(tmp_path, names))
    master = dectris_master(tmp_path, names, (512, 1028))
    expt = single_image_expt(
        tmp_path / "x.expt", str(master), (1028, 512), 2, (-1, 1e9), 0.075, single_file=True
    )
    doc = expt.read_text().replace('"single_file_indices": [0, 1]', '"single_file_indices": [1, 3]')
    expt.write_text(doc)
    np.testing.assert_array_equal(imported(tmp_path, expt), raw[[1, 3]])
    # image 2 of that scan is file frame 4: --frames 2 2 takes it alone
    np.testing.assert_array_equal(imported(tmp_path, expt, "--frames", 2, 2), raw[[3]])
    assert "one threshold channel" in refused(tmp_path, expt, "--threshold_channel", 2)


def test_missing_data_file_is_named(tmp_path):
    names = [EIGER2.format(codec="bslz4", k=1), "series_data_000002.h5"]
    link_beside(tmp_path, names[:1])
    master = dectris_master(tmp_path, names, (512, 1028))
    expt = single_image_expt(
        tmp_path / "x.expt", str(master), (1028, 512), 4, (-1, 1e9), 0.075, single_file=True
    )
    line = refused(tmp_path, expt)
    assert "series_data_000002.h5" in line and "does not exist" in line


def test_real_dectris_9m_master_its_mask_and_bit_depth(tmp_path):
    master = copy_real("dectris_eiger_master.h5", tmp_path)
    expt = single_image_expt(
        tmp_path / "x.expt", str(master), (3110, 3269), 1, (-1, 65535), 0.075, single_file=True
    )
    # as published, its data file is absent: one line naming it
    assert "dectris_eiger_data_000001.h5" in refused(tmp_path, expt)
    with h5py.File(master, "r+") as f:
        det = f["entry/instrument/detector"]
        assert det["bit_depth_image"][()] == 16
        # the published mask is all zero (spoofed metadata); mark a gap band in it, in place
        pm = det["detectorSpecific/pixel_mask"]
        assert pm.shape == (3269, 3110) and not pm[()].any()
        mask = np.zeros(pm.shape, bool)
        mask[514:551, :] = True
        pm[514:551, :] = 1
    rng = np.random.default_rng(9)
    # uint32 pixels of a 16-bit image: only the master's bit_depth_image makes 65535 a marker
    frame = rng.poisson(3, (1, 3269, 3110)).astype(np.uint32)
    frame[0, 5, 7] = 65535
    frame[0, 6, 8] = 65534
    frame[0, 7, 9] = 65533  # a count
    with h5py.File(tmp_path / "dectris_eiger_data_000001.h5", "w") as f:
        f.create_dataset("entry/data/data", data=frame, chunks=(1, 3269, 3110))
    data = imported(tmp_path, expt)[0]
    assert data[5, 7] == data[6, 8] == -1 and data[7, 9] == 65533
    assert (data == -1).sum() == mask.sum() + 2
    expected = np.where(frame[0] >= 65534, -1, frame[0].astype(np.int64))
    np.testing.assert_array_equal(data[~mask], expected[~mask])


def test_real_diamond_nxmx_master_equals_the_same_frame_as_cbf(tmp_path):
    """Therm_6_2.nxs (DLS I04, Eiger 2X 16M): its frame 1 was also converted to miniCBF by
    dlsnxs2cbf. Rebuild the data file from that frame with the detector's markers (65535 gap,
    65534 bad): through the real master it must import exactly as the CBF does."""
    master = copy_real("Therm_6_2.nxs", tmp_path)
    expt = single_image_expt(
        tmp_path / "x.expt", str(master), (4148, 4362), 1, (-1, 65535), 0.075, single_file=True
    )
    assert "Therm_6_2_000001.h5" in refused(tmp_path, expt)
    cbf = fabio.open(str(need(REAL / "cbf/dlsnxs2cbf_therm_0001.cbf.gz"))).data
    frame = np.where(cbf == -1, 65535, np.where(cbf == -2, 65534, cbf)).astype(np.uint16)
    with h5py.File(tmp_path / "Therm_6_2_000001.h5", "w") as f:
        f.create_dataset("data", data=frame[None], chunks=(1, 4362, 4148))
    data = imported(tmp_path, expt)[0]
    cbf_expt = single_image_expt(
        tmp_path / "c.expt", str(REAL / "cbf/dlsnxs2cbf_therm_####.cbf.gz"), (4148, 4362)
    )
    np.testing.assert_array_equal(data, imported(tmp_path, cbf_expt, name="cbf.nxs")[0])
    assert (data == -1).sum() == (cbf < 0).sum()


def test_real_nexgen_master_mask_and_bit_depth_behind_links(tmp_path):
    master = copy_real("xrc_209_master.h5", tmp_path)
    expt = single_image_expt(
        # a trusted range that excludes nothing: only the bit depth can mark 65535 and 65534
        tmp_path / "x.expt",
        str(master),
        (2068, 2162),
        2,
        (-1, 1e9),
        0.075,
        single_file=True,
    )
    assert "xrc_209_000001.h5" in refused(tmp_path, expt)
    rng = np.random.default_rng(2)
    # uint32 pixels: only the 16-bit depth in the _meta.h5 makes 65535 and 65534 markers
    frames = rng.poisson(2, (2, 2162, 2068)).astype(np.uint32)
    frames[0, 100, 100], frames[1, 200, 200], frames[1, 300, 300] = 65535, 65534, 65533
    mask = np.zeros((2162, 2068), bool)
    mask[:, 1030:1040] = True  # a module gap
    mask[7, 9] = True
    nexgen_files(tmp_path, "xrc_209", frames)  # data file only: the _meta.h5 is missing
    line = refused(tmp_path, expt)
    assert "xrc_209_meta.h5" in line and "does not exist" in line
    nexgen_files(tmp_path, "xrc_209", frames, mask=mask)
    data = imported(tmp_path, expt)
    invalid = mask[None] | (frames >= 65534)
    np.testing.assert_array_equal(data, np.where(invalid, -1, frames.astype(np.int32)))
    assert data[1, 300, 300] == 65533 and (data == -1).sum() == 2 * mask.sum() + 2


def test_nexgen_layout_virtual_dataset_only_needs_its_sources(tmp_path):
    """A master holding only the VDS: a missing source file would read as zeros in HDF5."""
    master = nexgen_master(tmp_path, "vds", 2, (512, 1028))
    with h5py.File(master, "a") as f:
        del f["entry/data/data_000001"]
    expt = single_image_expt(
        tmp_path / "x.expt", str(master), (1028, 512), 2, (-1, 1e9), 0.075, single_file=True
    )
    line = refused(tmp_path, expt)
    assert "vds_000001.h5" in line and "virtual dataset" in line
    frames = read_stack(link_beside(tmp_path, [EIGER2.format(codec="bslz4", k=1)]))
    nexgen_files(tmp_path, "vds", frames, mask=np.zeros((512, 1028), bool))
    np.testing.assert_array_equal(imported(tmp_path, expt), frames)


def test_dectris_2024_four_dimensional_data_and_channel_masks(tmp_path):
    names = [EIGER2.format(codec="bslz4", k=k) for k in (1, 2)]
    raw = read_stack(link_beside(tmp_path, names)).astype(np.uint16)
    channels = np.stack([raw, raw * 3 + 1], axis=1)  # (image, channel, y, x)
    m1 = np.zeros(raw.shape[1:], bool)
    m1[10, 20] = True
    m2 = np.zeros(raw.shape[1:], bool)
    m2[30:32, :] = True
    master = dectris2024_file(tmp_path, channels, [m1, m2])
    expt = single_image_expt(
        tmp_path / "x.expt", str(master), (1028, 512), 4, (-1, 1e9), 0.075, single_file=True
    )
    first = imported(tmp_path, expt)
    np.testing.assert_array_equal(first, np.where(m1, -1, raw.astype(np.int32)))
    second = imported(tmp_path, expt, "--threshold_channel", 2, name="t2.nxs")
    np.testing.assert_array_equal(second, np.where(m2, -1, channels[:, 1].astype(np.int32)))
    line = refused(tmp_path, expt, "--threshold_channel", 3)
    assert "threshold_channel 3" in line and "threshold_1, threshold_2" in line


def test_transposed_legacy_mask_is_transposed_with_a_warning(tmp_path):
    name = EIGER2.format(codec="bslz4", k=1)
    frames = read_stack(link_beside(tmp_path, [name]))
    with h5py.File(tmp_path / "legacy_000001.h5", "w") as f:
        f.create_dataset("data", data=frames)
    mask = np.zeros((512, 1028), bool)
    mask[3, 700] = True
    master = diamond_master(tmp_path, "legacy_000001.h5", 2, (512, 1028), mask=mask.T)
    expt = single_image_expt(
        tmp_path / "x.expt", str(master), (1028, 512), 2, (-1, 65535), 0.075, single_file=True
    )
    proc = run_script("import_data", expt, "--outfile", tmp_path / "d.nxs")
    assert "transposed" in proc.stderr and str(master) in proc.stderr
    with h5py.File(tmp_path / "d.nxs") as f:
        data = f["entry/image_series/data"][()]
    np.testing.assert_array_equal(data, np.where(mask[None], -1, frames.astype(np.int32)))


# ------------------------------------------------------------------------------------------
# files diffuseflow refuses, each with one line naming it


def test_refused_real_files(tmp_path):
    dm4 = need(REAL / "other/Gatan_float32_zero_array_001.dm4.gz")
    expt = single_image_expt(
        tmp_path / "dm4.expt", str(dm4).replace("_001.", "_###."), (4096, 4096)
    )
    assert str(dm4) in refused(tmp_path, expt) and "unknown image format" in refused(tmp_path, expt)
    multi = need(REAL / "expt/I23_24_panel.json")
    assert str(multi) in refused(tmp_path, multi) and "24 panels" in refused(tmp_path, multi)
    # a real DIALS 2.0 .expt whose data stayed at the beamline (/dls/...)
    vmxi = need(REAL / "expt/vmxi_experiments_0.expt")
    line = refused(tmp_path, vmxi)
    assert "image_17578_master.h5" in line and "not found" in line
