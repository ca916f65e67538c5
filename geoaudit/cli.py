"""The ``geoaudit`` command line.

Each subcommand lives in ``geoaudit/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser and sets ``func(args) -> int``.
Heavy imports (torch, datasets, geopandas) happen inside ``func`` so ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback

from geoaudit import __version__
from geoaudit._errors import GeoauditError

COMMANDS = ["audit", "compare", "dataset", "attack", "train", "defend", "calibrate", "demo"]

#: Commands that pick up where an interrupted run stopped when run again (a command may also
#: say so itself with ``set_defaults(resumable=True)``).
RESUMABLE = {("train",), ("demo",), ("dataset", "build", "imagenet-geo")}


def resumable(args) -> bool:
    """Whether re-running the command in ``args`` resumes an interrupted run.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.

    Returns
    -------
    bool
    """
    if getattr(args, "resumable", None) is not None:
        return bool(args.resumable)
    path = (args.command, getattr(args, "dataset_command", None), getattr(args, "dataset_name", None))
    return any(path[:len(r)] == r for r in RESUMABLE)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geoaudit",
        description="Audit image classifiers for geographic fairness (accuracy against GDP per capita).",
    )
    parser.add_argument("--version", action="version", version=f"geoaudit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads for torch (default: torch's own choice; the demo uses 1, "
                             "which is fastest for its small models on small machines)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"geoaudit.commands.{name}").register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    prog = f"geoaudit {args.command}"
    from geoaudit._progress import progress_enabled

    if not progress_enabled():  # datasets' own bars follow ours (read when datasets is imported)
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        if "datasets" in sys.modules:  # already imported (e.g. main() called from Python)
            sys.modules["datasets"].disable_progress_bars()
    if args.threads is not None:
        from geoaudit._validation import check_flag

        try:
            check_flag("--threads", args.threads, 1)
        except GeoauditError as e:
            print(f"geoaudit: error: {e}", file=sys.stderr)
            return 2
        import torch

        torch.set_num_threads(args.threads)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if resumable(args):
            print(f"{prog}: interrupted; finished work is kept, re-run the same command to resume.", file=sys.stderr)
        else:
            print(f"{prog}: interrupted; this command does not resume: re-running starts from the beginning.", file=sys.stderr)
        return 130
    except (GeoauditError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as e:
        if args.debug:
            traceback.print_exc()
        print(f"{prog}: error: {_message(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug, not bad input: still one line unless --debug
        if args.debug:
            traceback.print_exc()
        print(
            f"{prog}: internal error: {type(e).__name__}: {e}\n"
            "This is a bug in geoaudit; re-run with --debug for the traceback and report it.",
            file=sys.stderr,
        )
        return 1


def _message(e: BaseException) -> str:
    if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)) and e.filename:
        return f"{e.strerror or type(e).__name__}: {e.filename}"
    return str(e)


if __name__ == "__main__":
    sys.exit(main())
