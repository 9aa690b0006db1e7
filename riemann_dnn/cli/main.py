"""``riemann-dnn``: one console script, one subcommand per job.

Each subcommand lives in its own module of this package and registers itself through
``add_parser(subparsers)``; its handler receives the parsed arguments and returns an exit code.
Shared options and the checks made before any work are in :mod:`.options`. Every refusal is one
line on stderr, ``riemann-dnn COMMAND: error: ...``, exit status 2; a file that cannot be
written during the work (disk full, ...) is one line naming it and the reason, exit status 1
(``RIEMANN_DNN_DEBUG=1`` shows the traceback instead of either); Ctrl-C exits with 130. The
output directory a command locked is released in every case.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..experiments.records import WriteError
from . import bench, byom, demo, reproduce, segment, symmetry
from .options import Parser, UsageError, command_session

_SUBCOMMANDS = [reproduce, demo, symmetry, byom, segment, bench]


def build_parser() -> Parser:
    parser = Parser(
        prog="riemann-dnn",
        description="Symmetry-invariant Riemannian optimization for deep networks "
        "(Badrinarayanan, Mishra & Cipolla 2015), on CPU or GPU.",
    )
    parser.add_argument("--version", action="version", version=f"riemann-dnn {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _SUBCOMMANDS:
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    command = getattr(args, "command_name", f"riemann-dnn {args.command}")
    line = list(sys.argv[1:] if argv is None else argv)
    try:
        with command_session(command, line, wait=getattr(args, "wait", False)):
            return int(args.handler(args) or 0)
    except WriteError as err:
        if os.environ.get("RIEMANN_DNN_DEBUG"):
            raise
        print(
            f"{command}: error: {err} (RIEMANN_DNN_DEBUG=1 shows the traceback)", file=sys.stderr
        )
        return 1
    except UsageError as err:
        if os.environ.get("RIEMANN_DNN_DEBUG"):
            raise
        print(f"{command}: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, TypeError, OSError) as err:
        if os.environ.get("RIEMANN_DNN_DEBUG"):
            raise
        text = " ".join(str(err).split())  # one line, whatever the message's layout
        print(
            f"{command}: error: {text} (RIEMANN_DNN_DEBUG=1 shows the traceback)", file=sys.stderr
        )
        return 2
    except KeyboardInterrupt:
        print(
            "\ninterrupted; finished runs are on disk, rerun the command to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
