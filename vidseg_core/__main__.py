"""Command line: ``python -m vidseg_core <command> ...``.

Each sub-command lives in its own module under ``vidseg_core/commands`` and
exposes ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

# Before torch is imported (libgomp reads it when it loads): OpenMP threads sleep at barriers instead of
# spinning.  With spinning, a run sharing the CPU with another job slowed down up to ~25x (the coarse stage
# of 14 frames went from 4.6 s to 110 s).  A value set in the environment is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import VidSegError  # noqa: E402

#: command name -> module (relative to this package).  Order = help order.
COMMANDS = {
    "segment": ".commands.segment",
    "features": ".commands.features",
    "evaluate": ".commands.evaluate",
    "dataset": ".commands.dataset",
    "demo": ".commands.demo",
}


def _available():
    for name, mod in COMMANDS.items():
        try:
            yield name, importlib.import_module(mod, __package__)
        except ModuleNotFoundError as exc:  # command not built (yet)
            if exc.name and exc.name.startswith(__package__ + ".commands"):
                continue
            raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vidseg_core",
        description="VidSeg: zero-shot video semantic segmentation from diffusion features.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in _available():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one readable line on stderr (no source path / code line)."""
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(args._run(args) or 0)
    except VidSegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
