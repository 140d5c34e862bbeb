"""The ``st4r-lite`` command line: one subcommand per job of the method.

Each subcommand is declared by a small ``_add_<name>`` function in the module of its command group (``world``:
generate, view; ``train``: pretrain, export, heldout, bench; ``app``: demo, run; ``adapt``; ``eval``: evaluate,
ablation, report; ``study``: the studies), with its arguments and its help, and runs a function of the library.
Errors the user can fix (:class:`st4r_lite.errors.InputError`: bad sizes, unknown names, malformed files, bad
options; and the OS errors about paths the user gave: missing, not permitted, a folder where a file was
expected or the other way round, already there) are printed as one line starting with ``error:`` and exit
with status 2; anything else (a plain ``ValueError`` included) is a bug and shows its traceback.

Adding a subcommand: write ``_add_<name>(sub)`` in its group's module and register it in ``COMMANDS`` (keep the
order of the method).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from st4r_lite.cli import adapt, app, eval, study, train, world
from st4r_lite.errors import InputError
from st4r_lite.runtime import sigterm_as_interrupt

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    world._add_generate,
    world._add_view,
    train._add_pretrain,
    train._add_export,
    train._add_heldout,
    app._add_demo,
    train._add_bench,
    app._add_run,
    adapt._add_adapt,
    eval._add_evaluate,
    eval._add_ablation,
    eval._add_report,
    study._add_study,
]


# OS errors about a path the user gave (a file to read, a folder to write): the user can fix them.
PATH_ERRORS = (FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError, FileExistsError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="st4r-lite",
        description="St4RTrack, compact: 4D reconstruction and 3D tracking in the world frame, for teaching.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with sigterm_as_interrupt():  # kill / a scheduler's SIGTERM cleans up like Ctrl-C
            args.func(args)
    except (InputError, *PATH_ERRORS) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; no partial output was kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
