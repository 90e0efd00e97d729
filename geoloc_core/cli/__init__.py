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

from geoloc_core.cli import analysis, build, learn, locate, share, tools

log = logging.getLogger("geoloc")


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: the process's), run the command; 2 on an error the user can fix, said in one line."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args) or 0
    except (FileNotFoundError, ValueError, KeyError) as exc:
        log.error("%s", exc)
        return 2
    finally:
        from geoloc_core.server.jobqueue import job_ended

        job_ended()  # a job the app queued starts the next waiting one as it ends (nothing otherwise)


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
