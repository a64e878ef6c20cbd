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

#: module -> attributes mdx2 imports from it (each a function or class that raises if used)
STANDINS = {
    "cctbx": [],
    "cctbx.eltbx": [],
    "cctbx.eltbx.attenuation_coefficient": ["get_table"],
    "dxtbx": [],
    "dxtbx.flumpy": ["vec_from_numpy"],
    "dxtbx.format": [],
    "dxtbx.format.FormatPilatusHelpers": ["sensor_active_areas"],
    "dxtbx.model": [],
    "dxtbx.model.experiment_list": ["ExperimentList"],
    "scitbx": [],
    "scitbx.matrix": ["col", "sqr"],
}


def install_standins():
    """Write the stand-ins as real packages and put them on sys.path and PYTHONPATH, so that
    mdx2's joblib worker processes (--nproc > 1) import them too."""
    import os
    import tempfile
    from pathlib import Path

    root = Path(tempfile.gettempdir()) / f"diffuseflow-mdx2-standins-{os.getuid()}"
    for name, attrs in STANDINS.items():
        pkg = root.joinpath(*name.split("."))
        pkg.mkdir(parents=True, exist_ok=True)
        lines = ["def _raiser(name):",
                 "    def call(*a, **k):",
                 "        raise RuntimeError(name + ' needs dxtbx: stand-in called')",
                 "    return call", ""]  # fmt: skip
        for attr in attrs:
            if attr == "ExperimentList":
                lines += [
                    "class ExperimentList:",
                    "    from_file = staticmethod(_raiser('ExperimentList.from_file'))",
                ]
            else:
                lines.append(f"{attr} = _raiser({attr!r})")
        text = "\n".join(lines) + "\n"
        init = pkg / "__init__.py"
        if not init.exists() or init.read_text() != text:
            init.write_text(text)
    sys.path.insert(0, str(root))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(root)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    )


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
