"""`geoloc` command line: one subcommand per stage, each over a run folder, plus `run` for all of them.

Flags are generated from the config dataclasses (`config.py`, through `flags.py`): a default, a help text or a set of
allowed values is written there, once. Each command gets the flags of the stages it uses and no others. The commands
live by group, each module registering its own: `build` (the stages), `learn` (fine-tuning), `locate` (predict,
explain), `analysis` (compare, levers, coverage), `share` (export, map, report), `tools` (tiles, cross-time, weights).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from geoloc_core.base.errors import UserError
from geoloc_core.cli import analysis, build, learn, locate, share, tools
from geoloc_core.runs.folders import Run

log = logging.getLogger("geoloc")


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: the process's), run the command. A mistake the user can fix exits with status 2 and one
    message that says what to do next; anything else with 1 and its one-line cause. `-v` adds the traceback."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        logging.getLogger("faiss").setLevel(logging.WARNING)  # which CPU build it loaded: noise to a user
    try:
        return args.func(args) or 0
    except (FileNotFoundError, ValueError, KeyError) as exc:
        log.debug("where it happened:", exc_info=True)
        log.error("%s", _missing_artefact(exc) or exc)
        return 2
    except Exception as exc:  # a defect, not the user's doing: said in one line, not as a traceback
        log.debug("where it happened:", exc_info=True)
        log.error("%s: %s (unexpected: `geoloc -v ...` shows where; please report it)", type(exc).__name__, exc)
        return 1
    finally:
        from geoloc_core.server.jobqueue import job_ended

        job_ended()  # a job the app queued starts the next waiting one as it ends (nothing otherwise)


def _missing_artefact(exc: Exception) -> UserError | None:
    """A run's file read before the stage that writes it ran (or a run that is not there), said as the step to take."""
    if not isinstance(exc, FileNotFoundError) or not exc.filename:
        return None
    return Run(Path(exc.filename).parent).missing(Path(exc.filename))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="geoloc", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, func, help: str, run: bool = True) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        c.set_defaults(func=func)
        if run:
            c.add_argument("--run", type=Path, default=Path("runs/default"), help="run folder (default: runs/default)")
        return c

    for group in (build, learn, locate, analysis, share, tools):  # the order `geoloc --help` lists them in
        group.add_commands(command)
    return p


if __name__ == "__main__":
    sys.exit(main())
