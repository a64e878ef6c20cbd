"""Shared command-line plumbing: one-line errors, mdx2-style flags, provenance of arguments.

Scripts in ``scripts/`` build an :class:`argparse.ArgumentParser` with :func:`parser` and run
their ``main`` through :func:`run`, which turns :class:`~diffuseflow.errors.InputError` (and
argparse's own complaints) into a single ``<prog>: error: <message>`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

from diffuseflow.errors import InputError
from diffuseflow.io import nexus


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise InputError(f"{message} (see --help)")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The tool's docstring as written, and every option's default in its help (unless the
    help already says what the default is)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or not action.option_strings:
            return text
        if action.default is argparse.SUPPRESS or action.default is None:
            return text
        if action.default is False:
            return f"{text} (default: off)"
        return f"{text} (default: %(default)s)"


def parser(prog: str, description: str, compat: bool = True) -> argparse.ArgumentParser:
    """Argument parser of a tool; compat adds --mdx2_compat (for tools it changes)."""
    p = _Parser(prog=prog, description=description, formatter_class=_HelpFormatter)
    if not compat:
        return p
    p.add_argument(
        "--mdx2_compat",
        action="store_true",
        help="reproduce mdx2 1.0.5's conventions (pixel-corner hkl from the coarse lookup "
        "grid, centring-only absences) instead of the physical defaults",
    )
    return p


def add_nproc(p: argparse.ArgumentParser):
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="threads for decoding, compressing and per-pixel work (results do not depend on it)",
    )


def add_slab(p: argparse.ArgumentParser, what: str):
    p.add_argument(
        "--slab",
        type=int,
        nargs=2,
        metavar=("K", "N"),
        help=f"slab job K of N (0-based): {what} only this job's whole frame-chunks and write "
        "a partial file (assemble the N parts with --gather); default: the whole sweep",
    )


def add_experiment_selection(p: argparse.ArgumentParser):
    """--experiment and --frames: which sweep of an .expt, and which of its images."""
    p.add_argument(
        "--experiment",
        type=int,
        metavar="N",
        help="experiment N (0-based) of an .expt holding several; default: the only one",
    )
    p.add_argument(
        "--frames",
        type=int,
        nargs=2,
        metavar=("FIRST", "LAST"),
        help="import only images FIRST..LAST (1-based, inclusive, as DIALS' image_range); "
        "default: the whole scan",
    )


def add_gather(
    p: argparse.ArgumentParser,
    help: str = "assemble the partial files of the N slab jobs (--slab K N) into --outfile, "
    "copying compressed chunks as they are; equals a single-job run; default: one job",
):
    p.add_argument("--gather", nargs="+", metavar="PART", help=help)


def gather_if_asked(a, expect: dict) -> bool:
    """With --gather: assemble the slab jobs' parts into --outfile (refusing parts not made
    with ``expect``) and return True, the tool's work being done; else False."""
    if not a.gather:
        return False
    if a.slab:
        raise InputError("give --slab (one job) or --gather (assemble the jobs), not both")
    nexus.gather_partials(a.gather, a.outfile, expect)
    log(f"gathered {len(a.gather)} slab files into {a.outfile}")
    return True


def check_output(path):
    """Refuse an output that cannot be written before any work is done (one line)."""
    nexus.check_writable(path)
    return path


def check_slab(slab):
    """(K, N) from --slab, refused with a one-line error unless 0 <= K < N."""
    if slab is None:
        return None
    k, n = slab
    if n < 1 or not 0 <= k < n:
        raise InputError(f"--slab {k} {n}: needs N >= 1 and 0 <= K < N")
    return k, n


def positive(flag: str, allow_zero: bool = False):
    """argparse type: a finite number > 0 (>= 0 with ``allow_zero``), refused with a one-line
    error naming ``flag``."""

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise InputError(f"{flag} must be a number, is {text!r}") from None
        if not math.isfinite(value):
            raise InputError(f"{flag} must be a finite number, is {value:g}")
        if not (value >= 0 if allow_zero else value > 0):
            raise InputError(f"{flag} must be {'>=' if allow_zero else '>'} 0, is {value:g}")
        return value

    return parse


def nonnegative(flag: str):
    """argparse type: a finite number >= 0."""
    return positive(flag, allow_zero=True)


def set_threads(n: int):
    if n < 1:
        raise InputError(f"--nproc must be >= 1, is {n}")
    import numba

    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def run(main, argv=None) -> int:
    prog = os.path.basename(sys.argv[0])
    t0 = time.perf_counter()
    try:
        main(sys.argv[1:] if argv is None else argv)
    except InputError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    print(f"{prog}: completed in {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    return 0


def log(*args):
    print(*args, flush=True)
