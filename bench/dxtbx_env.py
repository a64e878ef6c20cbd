"""Create (once) a virtual environment that sees Debian's DIALS/dxtbx and holds diffuseflow's
dependencies, so that ``import_data.py --reader dxtbx`` runs against a real dxtbx.

    python bench/dxtbx_env.py [VENV]      # prints the environment's python

Needs Debian's ``python3-dials`` (``apt-get install --no-install-recommends python3-dials``:
DIALS with dxtbx 3.11.2, for the system Python 3.11). Default location:
$DIFFUSEFLOW_DXTBX_VENV or ~/.cache/diffuseflow/dxtbx-debian. The environment is made from
/usr/bin/python3 with --system-site-packages; libtbx looks for ``<prefix>/lib/cctbx``, which
is linked to the system's; Debian's old ``coverage`` breaks numba's import, so a current one
is installed over it. mdx2 1.0.5 goes in too (without its declared dependency dxtbx, which is
the system's here), so mdx2's own import steps run through real dxtbx. diffuseflow itself is
not installed: run its scripts with
PYTHONPATH=<checkout>, so the environment always runs the code of the checkout at hand.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import tomllib
from mdx2_env import DEPS as MDX2_DEPS
from mdx2_env import MDX2_VERSION, install_with_mdx2

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = Path("/usr/bin/python3")
SYSTEM_DXTBX = Path("/usr/lib/python3/dist-packages/dxtbx")
SYSTEM_CCTBX = Path("/usr/lib/cctbx")


def default_venv() -> Path:
    env = os.environ.get("DIFFUSEFLOW_DXTBX_VENV")
    return Path(env) if env else Path.home() / ".cache" / "diffuseflow" / "dxtbx-debian"


def available() -> bool:
    """Is Debian's dxtbx installed (the environment can be built)?"""
    return SYSTEM_PYTHON.exists() and SYSTEM_DXTBX.is_dir() and SYSTEM_CCTBX.is_dir()


def _dependencies() -> list[str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # numpy < 2: Debian's dxtbx extensions are built against numpy 1.x's ABI
    return [*meta["project"]["dependencies"], "coverage>=7", *MDX2_DEPS, "numpy<2"]


def ensure_dxtbx_python(venv: Path | None = None, timeout: float = 900) -> Path:
    """Python of the environment; builds it if missing or incomplete. Raises on failure."""
    venv = Path(venv or default_venv())
    py = venv / "bin" / "python"
    code = (
        "import dxtbx.model.experiment_list, numba, bitshuffle, fabio; import importlib.metadata"
        f" as m; assert m.version('mdx2') == '{MDX2_VERSION}'"
    )
    probe = [str(py), "-c", code]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return py
    subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=timeout)  # fmt: skip
    link = venv / "lib" / "cctbx"
    if not link.exists():
        link.symlink_to(SYSTEM_CCTBX)
    install_with_mdx2(py, _dependencies(), timeout)
    subprocess.run(probe, check=True, capture_output=True)
    return py


if __name__ == "__main__":
    print(ensure_dxtbx_python(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
