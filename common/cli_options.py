"""Command-line options declared once, on the dataclass field they set: `option(default, help)`
names the field's flag, help and (where the annotation does not say it) how the text becomes
the value; `add_options` turns a dataclass into argparse options and `from_args` the parsed
namespace back into the dataclass. A field the command line does not set says so
(`internal`); a field that is itself a dataclass exposes some of its fields (`nested`).

An option the user leaves out is absent from the namespace (argparse.SUPPRESS), so the
dataclass default applies; `%(default)s` in a help text shows that default."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

from common.errors import ConfigError

KEY = "cli"  # the metadata key of a field: an Opt, a Nested, or None (not an option)


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


@dataclass(frozen=True)
class Opt:
    """One option: its help, its flag (default: --field-name), `parse` (the argparse value ->
    the field value; raises ValueError naming the bad text) and argparse's own keywords."""

    help: str
    flag: str | None = None
    parse: Callable[[Any], Any] | None = None
    argparse: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Nested:
    """A dataclass-valued field: `factory(**given)` of the options given, each sub-field's
    option either the sub-dataclass's own declaration (None) or an Opt given here."""

    factory: Callable[..., Any]
    options: dict[str, Opt | None]


def option(default=MISSING, help: str = "", *, default_factory=MISSING, flag=None, parse=None,
           **argparse_kw):  # fmt: skip
    meta = {KEY: Opt(help, flag, parse, argparse_kw)}
    return field(default=default, default_factory=default_factory, metadata=meta)


def internal(default=MISSING, *, default_factory=MISSING):
    """A field no option sets (a seed, a test hook, a value derived from the others)."""
    return field(default=default, default_factory=default_factory, metadata={KEY: None})


def nested(factory, *own: str, **given: Opt):
    """A dataclass field whose sub-fields `own` keep their own options and `given` get these."""
    options = {**dict.fromkeys(own), **given}
    return field(default_factory=factory, metadata={KEY: Nested(factory, options)})


@dataclass(frozen=True)
class Flag:
    """One option as the parser sees it: the field path it sets and how."""

    path: tuple[str, ...]
    opt: Opt
    hint: Any
    default: Any

    @property
    def flag(self) -> str:
        return self.opt.flag or "--" + self.path[-1].replace("_", "-")

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


def _default(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None


def flags(cls) -> list[Flag]:
    """Every option of a dataclass, nested ones included, in field order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(KEY)
        if isinstance(spec, Opt):
            out.append(Flag((f.name,), spec, hints[f.name], _default(f)))
        elif isinstance(spec, Nested):
            sub_fields = {s.name: s for s in dataclasses.fields(_default(f))}
            sub_hints = typing.get_type_hints(type(_default(f)))
            for name, opt in spec.options.items():
                opt = opt or sub_fields[name].metadata[KEY]
                value = getattr(_default(f), name)
                out.append(Flag((f.name, name), opt, sub_hints[name], value))
    return out


def undeclared(cls) -> list[str]:
    """Fields that say neither what option sets them nor that none does."""
    return [f.name for f in dataclasses.fields(cls) if KEY not in f.metadata]


def _item_type(hint):
    """(argparse type, nargs) of an annotation."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (tuple, list):
        return args[0], "+"
    if args and origin is not dict:  # X | None
        return args[0], None
    return hint, None


def _show(value, parse) -> str:
    if hasattr(parse, "show"):
        return parse.show(value)
    if isinstance(value, tuple | list):
        return " ".join(str(v) for v in value)
    return str(value)


def add_options(parser, *classes) -> None:
    """argparse options of every Opt of `classes`; a flag declared by two fields (one option
    feeding both) is added once, with the first declaration's help."""
    seen = set()
    for cls in classes:
        for f in flags(cls):
            if f.flag in seen:
                continue
            seen.add(f.flag)
            kw = dict(f.opt.argparse)
            item, nargs = _item_type(f.hint)
            if f.opt.parse is None and item is bool:
                kw.setdefault("action", "store_true")
            elif f.opt.parse is None:
                kw.setdefault("type", item if item in (int, float, Path) else None)
                if nargs and "action" not in kw:
                    kw.setdefault("nargs", nargs)
            shown = _show(f.default, f.opt.parse).replace("%", "%%")
            text = f.opt.help.replace("%(default)s", shown)
            parser.add_argument(f.flag, dest=f.dest, default=argparse.SUPPRESS, help=text, **kw)


def _value(f: Flag, raw):
    if f.opt.parse is not None:
        try:
            return f.opt.parse(raw)
        except ValueError as e:
            raise ConfigError(f"{f.flag} {e}") from None
    return tuple(raw) if typing.get_origin(f.hint) is tuple else raw


def from_args(cls, args: argparse.Namespace, **fixed):
    """`cls` of the options given in `args` (the dataclass defaults for the others)."""
    given = vars(args)
    kwargs: dict[str, Any] = dict(fixed)
    subs: dict[str, dict[str, Any]] = {}
    for f in flags(cls):
        if f.dest in given:
            value = _value(f, given[f.dest])
            if len(f.path) == 1:
                kwargs[f.path[0]] = value
            else:
                subs.setdefault(f.path[0], {})[f.path[1]] = value
    for name, values in subs.items():
        spec = next(x for x in dataclasses.fields(cls) if x.name == name).metadata[KEY]
        kwargs[name] = spec.factory(**values)
    return cls(**kwargs)


def to_argv(cfg, *names: str) -> list[str]:
    """The options that give these fields of `cfg` their values (from_args' reverse), e.g. for
    the command line of a job."""
    out: list[str] = []
    for f in flags(type(cfg)):
        if f.path[0] not in names:
            continue
        value = getattr(cfg, f.path[0])
        if hasattr(f.opt.parse, "show") and not isinstance(value, dict):
            items = [f.opt.parse.show(value)]
        elif isinstance(value, dict):
            items = [f"{k}={v}" for k, v in value.items()]
        elif isinstance(value, tuple | list):
            items = [str(v) for v in value]
        else:
            items = [str(value)]
        if f.opt.argparse.get("action") == "append":
            out += [x for item in items for x in (f.flag, item)]
        else:
            out += [f.flag, *items]
    return out


# --- parse functions: the text an option takes -> the field's value -----------------------


class comma:
    """'1,10' -> (1, 10); shows a default the way it is typed."""

    def __init__(self, item=str):
        self.item = item

    def __call__(self, text: str) -> tuple:
        try:
            return tuple(self.item(v.strip()) for v in text.split(",") if v.strip())
        except ValueError:
            raise ValueError(f"{text!r}: expected a comma list, e.g. 1,10") from None

    def show(self, value) -> str:
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)


class pairs:
    """Repeated NAME=VALUE -> {NAME: VALUE}."""

    def __init__(self, what: str = "NAME=DIR"):
        self.what = what

    def __call__(self, items: list[str]) -> dict[str, str]:
        out = {}
        for item in items:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"{item!r}: expected {self.what}")
            out[key.strip()] = value.strip()
        return out

    def show(self, value: dict) -> str:
        return " ".join(f"{k}={v}" for k, v in value.items())
