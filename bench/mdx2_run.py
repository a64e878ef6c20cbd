#!/usr/bin/env python3
"""Run an mdx2 1.0.5 command without dxtbx, as a comparison reference.

    MDX2_PYTHON bench/mdx2_run.py find_peaks geometry.nxs data.nxs --count_threshold 20 ...
    MDX2_PYTHON bench/mdx2_run.py loadall file.nxs:name [file.nxs:name ...]

mdx2 imports cctbx/dxtbx/scitbx at module level, although find_peaks, mask_peaks,
bin_image_series, integrate, correct, ... never call them (mdx2-compat.md §7). This installs
stand-in modules whose every attribute raises if called, then runs mdx2's own entry point.
Run it with the Python of an environment that has mdx2 (installed with --no-deps).
"""

import importlib
import sys
import types


def _raiser(name):
    def call(*args, **kwargs):
        raise RuntimeError(f"{name} needs dxtbx: this stand-in must not be called")

    return call


class _ExperimentList:
    @staticmethod
    def from_file(*args, **kwargs):
        raise RuntimeError("ExperimentList.from_file needs dxtbx")


STANDINS = {
    "cctbx": {},
    "cctbx.eltbx": {},
    "cctbx.eltbx.attenuation_coefficient": {"get_table": _raiser("get_table")},
    "dxtbx": {},
    "dxtbx.flumpy": {"vec_from_numpy": _raiser("vec_from_numpy")},
    "dxtbx.format": {},
    "dxtbx.format.FormatPilatusHelpers": {"sensor_active_areas": _raiser("sensor_active_areas")},
    "dxtbx.model": {},
    "dxtbx.model.experiment_list": {"ExperimentList": _ExperimentList},
    "scitbx": {},
    "scitbx.matrix": {"col": _raiser("col"), "sqr": _raiser("sqr")},
}


def install_standins():
    for name, attrs in STANDINS.items():
        mod = types.ModuleType(name)
        mod.__path__ = []  # a package, so that submodules resolve
        for k, v in attrs.items():
            setattr(mod, k, v)
        sys.modules[name] = mod
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, mod)


def loadall(specs):
    """Load objects with mdx2's own loader; print their class; fail on any warning except
    mdx2's version note."""
    import warnings

    from mdx2.io import loadobj

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=".*version.*")
        for spec in specs:
            path, name = spec.rsplit(":", 1)
            obj = loadobj(path, name)
            print(f"{spec}: {type(obj).__module__}.{type(obj).__name__}")


def main():
    install_standins()
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "loadall":
        loadall(args)
        return
    sys.argv = [f"mdx2.{cmd}", *args]
    importlib.import_module(f"mdx2.command_line.{cmd}").run()


if __name__ == "__main__":
    main()
