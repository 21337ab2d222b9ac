"""docs/config_reference.md's key table, built from the config dataclasses themselves: each
field's default and the comment on its line in engine/config.py (one declaration per key)."""

from __future__ import annotations

import dataclasses
import inspect
import re

from engine import config

START, END = (
    "<!-- config-table: start (python -m engine.config_table) -->",
    "<!-- config-table: end -->",
)
SECTIONS = (
    ("", config.RunConfig),
    ("teacher.", config.TeacherConfig),
    ("gan.", config.GanConfig),
    ("condense.", config.CondenseConfig),
    ("eval.", config.EvalConfig),
)


def _field_comments(cls: type) -> dict[str, str]:
    """field name -> its `#:` comment lines (the Sphinx autodoc convention) joined."""
    comments, pending = {}, []
    for line in inspect.getsource(cls).splitlines():
        text = line.strip()
        if text.startswith("#:"):
            pending.append(text[2:].strip())
        elif (m := re.match(r"(\w+)\s*:", text)) and line.startswith("    ") and pending:
            comments[m.group(1)] = " ".join(pending)
            pending = []
        else:
            pending = []
    return comments


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def keys() -> list[tuple[str, object, str]]:
    """(key as --set takes it, its dataclass default, its meaning) for every config key."""
    out = []
    for prefix, cls in SECTIONS:
        comments = _field_comments(cls)
        for f in dataclasses.fields(cls):
            if f.name in ("teacher", "gan", "condense", "eval"):
                continue
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = ""
            out.append((f"{prefix}{f.name}", default, comments.get(f.name, "")))
    return out


def values(cfg: config.RunConfig) -> dict[str, object]:
    """A resolved config flattened to the keys of `keys()`."""
    flat = {}
    for key, value in cfg.to_dict().items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def rows() -> list[tuple[str, str, str]]:
    """The markdown cells of the reference table."""
    return [(f"`{k}`", f"`{d}`" if d != "" else '`""`', _cell(m)) for k, d, m in keys()]


def table() -> str:
    lines = ["| key | default | meaning |", "| --- | --- | --- |"]
    lines += [f"| {k} | {d} | {m} |" for k, d, m in rows()]
    return "\n".join([START, *lines, END])


def write_docs() -> None:
    """Rewrite the generated tables: config_reference.md's keys, recipes.md's departures."""
    from pathlib import Path

    from engine.presets import load_preset
    from engine.recipes import HERDING_DM, TABLE_END, TABLE_START, markdown_table

    docs = Path(__file__).resolve().parents[1] / "docs"
    for name, start, end, text in (
        ("config_reference.md", START, END, table()),
        (
            "recipes.md",
            TABLE_START,
            TABLE_END,
            markdown_table(HERDING_DM, load_preset("fashion-mnist-smoke")),
        ),
    ):
        doc = docs / name
        pattern = re.escape(start) + ".*?" + re.escape(end)
        doc.write_text(re.sub(pattern, lambda _, t=text: t, doc.read_text(), flags=re.S))


if __name__ == "__main__":  # python -m engine.config_table
    write_docs()
