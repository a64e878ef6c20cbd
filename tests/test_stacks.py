"""Image and mask stacks (io/nexus, io/bslz4): both codecs written and read chunk by chunk in
threads, byte for byte what HDF5's own filters write, the codec chosen at import and followed
by the mask, and the gzip choice readable without any filter plugin."""

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import h5py
import hdf5plugin
import numpy as np
import pytest
from conftest import run_script

from diffuseflow.errors import InputError
from diffuseflow.io import bslz4, nexus


def _stack_values(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "b":
        return rng.random(shape) < 0.1
    values = rng.poisson(0.7, shape) - 1  # mostly 0 and -1, as a diffuse frame
    values[..., ::13, ::7] = rng.poisson(300, values[..., ::13, ::7].shape)
    return values.astype(dtype)


@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.uint8, bool])
@pytest.mark.parametrize("shape", [(3, 100, 77), (1, 1, 5), (2, 64, 64)])
def test_bslz4_chunk_is_the_filters_own_bytes(tmp_path, dtype, shape):
    """Our direct-chunk encoding equals what hdf5plugin's bitshuffle filter stores for the same
    chunk, and decodes back; h5py (through the filter) reads chunks we wrote."""
    a = _stack_values(dtype, shape, 1)
    with h5py.File(tmp_path / "t.h5", "w") as f:
        ref = f.create_dataset(
            "by_filter", data=a, chunks=shape, fletcher32=True, **hdf5plugin.Bitshuffle()
        )
        mask, stored = ref.id.read_direct_chunk((0, 0, 0))
        assert mask == 0
        assert bslz4.encode(a) == stored
        np.testing.assert_array_equal(bslz4.decode(stored, a.dtype, a.size).reshape(shape), a)
        ours = f.create_dataset("ours", shape=shape, dtype=a.dtype, chunks=shape,
                                **bslz4.filter_options())  # fmt: skip
        ours.id.write_direct_chunk((0, 0, 0), bslz4.encode(a))
    with h5py.File(tmp_path / "t.h5") as f:
        np.testing.assert_array_equal(f["ours"][()], a)
        assert nexus.stack_codec(f["ours"]) == "bslz4"


@pytest.mark.parametrize("codec", nexus.CODECS)
@pytest.mark.parametrize("dtype", [np.int32, bool])
def test_stack_round_trip_in_threads(tmp_path, codec, dtype):
    """Edge chunks in every axis, slabs of two frame-chunks, a never-written chunk (reads as the
    fill value), slabs read from any chunk boundary, 1 and 2 threads: the array written."""
    a = _stack_values(dtype, (11, 70, 53), 2)
    fill = -1 if dtype is np.int32 else False
    with h5py.File(tmp_path / "s.h5", "w") as f:
        d = nexus.create_stack(f, "d", a.shape, dtype, (4, 32, 32), codec=codec, fill=fill)
        writer = nexus.StackWriter(d, threads=2)
        writer.write(0, a[:8])
        writer.close()
        assert nexus.stack_codec(d) == codec
    want = a.copy()
    want[8:] = fill
    with h5py.File(tmp_path / "s.h5") as f:
        d = f["d"]
        np.testing.assert_array_equal(d[()], want)  # HDF5's own filter pipeline agrees
        for pool in (None, ThreadPoolExecutor(2)):
            np.testing.assert_array_equal(nexus.read_slab(d, 0, 11, pool), want)
            np.testing.assert_array_equal(nexus.read_slab(d, 4, 8, pool), want[4:8])
            out = np.empty((3, 70, 53), dtype)
            assert nexus.read_slab(d, 8, 11, pool, out=out) is out


def test_damaged_bslz4_chunks_never_decode_silently():
    """1-3 random bytes changed in a stored chunk, 2000 times: every change that alters the
    bytes is refused (Fletcher-32), none crashes the process (block sizes checked first)."""
    code = (
        "import numpy as np\n"
        "from diffuseflow.io import bslz4\n"
        "rng = np.random.default_rng(0)\n"
        "a = (rng.poisson(0.7, (2, 100, 77)) - 1).astype(np.int32)\n"
        "good = bslz4.encode(a)\n"
        "silent = refused = 0\n"
        "for _ in range(2000):\n"
        "    bad = bytearray(good)\n"
        "    for i in rng.integers(0, len(bad), rng.integers(1, 4)):\n"
        "        bad[i] = rng.integers(0, 256)\n"
        "    if bytes(bad) == good:\n"
        "        continue\n"
        "    try:\n"
        "        bslz4.decode(bytes(bad), np.int32, a.size)\n"
        "        silent += 1\n"
        "    except ValueError:\n"
        "        refused += 1\n"
        "print(silent, refused)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    silent, refused = map(int, proc.stdout.split())
    assert silent == 0 and refused > 1900


def _corrupt(path, dataset, codec_name):
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + 12)
        fh.write(f"\xff\x00garbage, not {codec_name}\x00\xff".encode() * 4)


@pytest.mark.parametrize("codec", nexus.CODECS)
def test_a_corrupt_chunk_is_one_line_naming_the_file(tmp_path, codec):
    a = _stack_values(np.int32, (4, 64, 64), 3)
    path = tmp_path / "c.h5"
    with h5py.File(path, "w") as f:
        d = nexus.create_stack(f, "d", a.shape, np.int32, (4, 64, 64), codec=codec)
        nexus.StackWriter(d).write(0, a)
    _corrupt(path, "d", codec)
    with h5py.File(path) as f, pytest.raises(InputError, match="c.h5: the compressed chunk at"):
        nexus.read_slab(f["d"], 0, 4)


def test_import_codecs_give_the_same_arrays_and_the_mask_follows(insulin_run, tmp_path):
    """bslz4 (default) and gzip imports of one sweep hold identical arrays, record the codec,
    and mask_peaks writes its mask in the data's codec (identical masks)."""
    expt = insulin_run / "crystal/sweep.expt"
    paths = {}
    for codec in nexus.CODECS:
        paths[codec] = tmp_path / f"data_{codec}.nxs"
        run_script("import_data", expt, "--compression", codec, "--outfile", paths[codec])
        mask = tmp_path / f"mask_{codec}.nxs"
        run_script("mask_peaks", insulin_run / "geometry.nxs", paths[codec],
                   insulin_run / "peaks.nxs", "--outfile", mask)  # fmt: skip
    with h5py.File(paths["bslz4"]) as a, h5py.File(paths["gzip"]) as b:
        da, db = a["entry/image_series/data"], b["entry/image_series/data"]
        assert (nexus.stack_codec(da), nexus.stack_codec(db)) == ("bslz4", "gzip")
        np.testing.assert_array_equal(da[()], db[()])
        assert nexus.provenance(paths["bslz4"])["parameters"]["compression"] == "bslz4"
        assert nexus.provenance(paths["gzip"])["parameters"]["compression"] == "gzip"
        assert da.id.get_storage_size() < 1.3 * db.id.get_storage_size()
    with h5py.File(tmp_path / "mask_bslz4.nxs") as a, h5py.File(tmp_path / "mask_gzip.nxs") as b:
        ma, mb = a["entry/mask/signal"], b["entry/mask/signal"]
        assert (nexus.stack_codec(ma), nexus.stack_codec(mb)) == ("bslz4", "gzip")
        np.testing.assert_array_equal(ma[()], mb[()])
        assert ma[()].any()
    # the gzip file needs no filter plugin; the bslz4 one does (h5py alone cannot read it)
    probe = (
        "import sys, h5py\n"
        "f = h5py.File(sys.argv[1])\n"
        "try:\n    f['entry/image_series/data'][0]\n    print('read')\n"
        "except OSError:\n    print('needs a plugin')\n"
    )
    env = {"HDF5_PLUGIN_PATH": str(tmp_path / "no-plugins")}
    said = {
        codec: subprocess.run(
            [sys.executable, "-c", probe, str(p)], capture_output=True, text=True, env=env
        ).stdout.strip()
        for codec, p in paths.items()
    }
    assert said == {"gzip": "read", "bslz4": "needs a plugin"}


def test_gather_refuses_parts_in_another_codec(insulin_run, tmp_path):
    expt = insulin_run / "crystal/sweep.expt"
    parts = [tmp_path / "p0.nxs", tmp_path / "p1.nxs"]
    for k, codec in enumerate(nexus.CODECS):
        run_script("import_data", expt, "--compression", codec, "--slab", k, 2,
                   "--outfile", parts[k])  # fmt: skip
    proc = run_script(
        "import_data", expt, "--gather", *parts, "--outfile", tmp_path / "all.nxs", check=False
    )
    assert proc.returncode == 2
    assert "p1.nxs: its entry/image_series/data differs from" in proc.stderr
    assert not (tmp_path / "all.nxs").exists()
