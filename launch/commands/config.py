"""`gencond config`: every config key of a preset as it resolves (with --set or --config), beside
its default and meaning; optionally the resolved config as JSON for `condense --config FILE`."""

from __future__ import annotations

from pathlib import Path

from common.console import console
from launch.commands.common import SET_HELP, add_recipe_option, run_config


def add(sub) -> None:
    p = sub.add_parser(
        "config",
        help="every config key of a preset: its value, default and meaning; or the JSON file "
        "`condense --config` takes",
        description="Resolve --preset and --set (or --config FILE) as `condense` would and show "
        "every key with its value, the dataclass default where the preset changes it, and its "
        "meaning (from the config dataclasses, as docs/config_reference.md).",
        epilog="example: gencond config --preset fashion-mnist-smoke --set ipc=50 --changed "
        "--json my.json; then gencond condense --config my.json --data D --out RUN",
    )
    p.add_argument("--preset", default=None, help="a preset name, e.g. fashion-mnist-smoke")
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="a resolved config as JSON instead of --preset and --set",
    )
    add_recipe_option(p)
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="a prepared dataset folder: refuse a preset made for another dataset",
    )
    p.add_argument(
        "--changed",
        action="store_true",
        help="show only the keys whose value differs from the dataclass default",
    )
    p.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write the resolved config to FILE (for `condense --config FILE`)",
    )
    p.set_defaults(handler=_run_config)


def _run_config(args) -> int:
    from rich.table import Table

    from common.console import stdout_console
    from engine.config_table import keys, values

    cfg = run_config(args)
    resolved = values(cfg)
    rows = []
    for key, default, meaning in keys():
        value = resolved[key]
        changed = value != default and not (isinstance(default, tuple) and tuple(value) == default)
        if args.changed and not changed:
            continue
        rows.append(
            {
                "key": key,
                "value": str(value),
                "default": str(default) if changed else "",
                "meaning": meaning,
            }
        )
    recipe = "" if cfg.recipe == "paper" else f", recipe {cfg.recipe}"
    title = f"Config of {cfg.preset}{recipe}" + (" (keys it changes)" if args.changed else "")
    table = Table(title=title)
    for column in ("key", "value", "default", "meaning"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(r["key"], r["value"], r["default"], r["meaning"])
    stdout_console.print(table)
    if args.json is not None:
        cfg.to_file(args.json)
        console.print(f"resolved config written to {args.json}")
    return 0
