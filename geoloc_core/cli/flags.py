"""Flags generated from the config dataclasses (`config.py`), and the configs read back from parsed flags.

A default, a help text or a set of allowed values is written in the dataclass, once; a command gets the flags
of the stages it uses and no others.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

from geoloc_core.config import GRAPHS, flag_of


def _scalar_type(f: dataclasses.Field) -> type:
    """The Python type of a field's values, from its default or, for optional fields, its annotation."""
    if f.default is not None and f.default is not dataclasses.MISSING:
        value = f.default[0] if isinstance(f.default, tuple) else f.default
        return type(value)
    return {"int": int, "float": float}.get(str(f.type).split("|")[0].strip(), str)


def add_settings(parser: argparse.ArgumentParser, cls: type, section: str, only: tuple[str, ...] | None = None) -> None:
    """One flag per field of config class `cls` (or of the fields in `only`), stored as `section.field`."""
    for f in dataclasses.fields(cls):
        if (only is not None and f.name not in only) or dataclasses.is_dataclass(f.default_factory):
            continue
        meta, kind = f.metadata, _scalar_type(f)
        help_text = meta.get("help", "").replace("%", "%%")  # argparse formats help with %
        if meta.get("choices"):
            help_text += f" ({', '.join(map(str, meta['choices']))})"
        dest = f"{section}.{f.name}"
        if isinstance(f.default, bool):
            parser.add_argument(flag_of(f), dest=dest, action=argparse.BooleanOptionalAction, default=f.default,
                                help=help_text)
        elif isinstance(f.default, tuple):
            parser.add_argument(flag_of(f), dest=dest, type=list_of(kind, meta.get("choices")), default=f.default,
                                metavar=f.name.upper(), help=f"{help_text} (default: {','.join(map(str, f.default))})")
        elif meta.get("positional"):
            parser.add_argument(dest, metavar=f.name.upper(), nargs="?", default=f.default,
                                help=f"{help_text} (default: {f.default})")
        else:
            optional_value = {"nargs": "?", "const": meta["const"]} if "const" in meta else {}
            parser.add_argument(flag_of(f), dest=dest, type=kind, default=f.default, choices=meta.get("choices"),
                                metavar=f.name.upper(), help=f"{help_text} (default: %(default)s)",
                                **optional_value)  # a command's set_defaults shows


def list_of(kind: type, choices: tuple | None):
    """An argparse type: comma-separated values of `kind`, each one of `choices` when given."""
    def parse(text: str) -> tuple:
        values = tuple(kind(v.strip()) for v in text.split(",") if v.strip())
        bad = [v for v in values if choices and v not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(map(str, choices or ()))}")
        return values
    return parse


def add_graphs(c: argparse.ArgumentParser) -> None:
    """`--graphs`: the graphs a command works over (None: every graph the run has built)."""
    c.add_argument("--graphs", type=list_of(str, GRAPHS), default=None,
                   help=f"comma-separated graphs ({', '.join(GRAPHS)}; default: every graph the run has built)")


def settings(args: argparse.Namespace, cls: type, section: str, **fixed: Any) -> Any:
    """The `cls` config the command line describes: its flags' values, defaults for fields it has no flag for."""
    given = {f.name: getattr(args, f"{section}.{f.name}") for f in dataclasses.fields(cls)
             if hasattr(args, f"{section}.{f.name}")}
    return cls(**{**given, **fixed})


Command = Callable[..., argparse.ArgumentParser]  # `command(name, func, help, run=True)`: a subcommand's parser
