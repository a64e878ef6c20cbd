"""Create (once) a virtual environment with mdx2 1.0.5 installed without dxtbx.

    python bench/mdx2_env.py [VENV]      # prints the environment's python

Default location: $DIFFUSEFLOW_MDX2_VENV or ~/.cache/diffuseflow/mdx2-1.0.5. mdx2's wheel
declares dxtbx, which PyPI cannot provide, so its real dependencies are installed first and
mdx2 itself with --no-deps (mdx2-compat.md §7.2). Run mdx2 commands with bench/mdx2_run.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MDX2_VERSION = "1.0.5"
DEPS = ["numpy", "scipy", "pandas", "h5py", "nexusformat", "joblib", "numexpr",
        "simple-parsing", "loguru"]  # fmt: skip


def default_venv() -> Path:
    env = os.environ.get("DIFFUSEFLOW_MDX2_VENV")
    return Path(env) if env else Path.home() / ".cache" / "diffuseflow" / f"mdx2-{MDX2_VERSION}"


def ensure_mdx2_python(venv: Path | None = None, timeout: float = 600) -> Path:
    """Python of an environment with mdx2; builds it if missing. Raises on failure."""
    venv = Path(venv or default_venv())
    py = venv / "bin" / "python"
    probe = [str(py), "-c", f"import importlib.metadata as m; assert m.version('mdx2') == "
             f"'{MDX2_VERSION}'"]  # fmt: skip
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return py
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=timeout)
    install_with_mdx2(py, DEPS, timeout)
    subprocess.run(probe, check=True, capture_output=True)
    return py


def install_with_mdx2(py: Path, deps: list[str], timeout: float):
    """pip-install ``deps`` into the environment of ``py``, then mdx2 without its declared
    dependencies (dxtbx is not on PyPI)."""
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, *deps], check=True, timeout=timeout, capture_output=True)
    subprocess.run([*pip, "--no-deps", f"mdx2=={MDX2_VERSION}"], check=True, timeout=timeout,
                   capture_output=True)  # fmt: skip


if __name__ == "__main__":
    print(ensure_mdx2_python(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
