"""What several command groups share: the run options, positive integers, the --set help."""

from __future__ import annotations

from pathlib import Path

from common.cli_options import positive  # noqa: F401 (the commands' integer type)

SET_HELP = (
    "override a config value: key=value; keys every preset honours: ipc, seed, max_steps "
    "(stop after this many generator updates), device (cpu|cuda); sections: teacher.*, gan.*, "
    "condense.*, eval.* (docs/config_reference.md); repeatable"
)


PRETRAIN_SET_HELP = (
    "override a config value: key=value; the pretrain stage reads seed, device and the "
    "teacher.* and gan.* sections (docs/config_reference.md); ipc, max_steps and condense.* "
    "are accepted but ignored here; repeatable"
)


MISMATCH_HELP = (
    "use the data / pretrain stage even though the run or stage records another one (by "
    "default that is refused: meta.json's source sha256 and the stage's sha256 must match)"
)

FIT_CACHE_HELP = (
    "a folder where the fitted coreset start (condense.coreset_init) is kept under a hash of "
    "everything it depends on and reused by any run with the same fit (a sweep passes "
    "OUT/fit-cache); without it only RUN/coreset_fit.pt, which a stopped run reuses"
)


RECIPE_HELP = (
    "how the preset's method is changed: paper (the default: none, the paper's method) or "
    "herding-dm (the recommended recipe: a fitted herding start, DM-style class-mean matching; "
    "same artifact) or herding-dm-refined (herding-dm with its coreset first refined by DM's "
    "pixel updates). Each recipe's departures: docs/recipes.md; leave one out with --set "
    "recipe_without=NAME"
)


def add_recipe_option(p) -> None:
    p.add_argument("--recipe", default=None, metavar="NAME", help=RECIPE_HELP)


def with_recipe(args, overrides: list[str]) -> list[str]:
    """--set items with --recipe NAME first (a --set recipe=... later still wins)."""
    recipe = getattr(args, "recipe", None)
    return overrides if recipe is None else [f"recipe={recipe}", *overrides]


def add_run_options(p, out_help: str, set_help: str = SET_HELP) -> None:
    p.add_argument(
        "--preset",
        default=None,
        help="<dataset>-ipc<K> (the paper's method at a GPU budget) or <dataset>-smoke (a "
        "2-core CPU budget), e.g. fashion-mnist-ipc10; for your own image folder "
        "imagefolder-ipc10 or imagefolder-smoke (all: docs/config_reference.md)",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="a resolved config as JSON instead of --preset and --set (what `gencond submit` "
        "hands its jobs; every key as in docs/config_reference.md)",
    )
    p.add_argument("--data", required=True, type=Path, help="a folder written by `gencond prep`")
    p.add_argument("--out", required=True, type=Path, help=out_help)
    add_recipe_option(p)
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=set_help
    )


def run_config(args):
    """The resolved, validated RunConfig of --preset and --set (or of --config), refused when
    made for another dataset than --data (when there is a --data)."""
    from common.errors import ConfigError
    from engine.config import RunConfig
    from engine.presets import check_dataset, load_preset

    if args.config is None:
        if args.preset is None:
            raise ConfigError("give --preset NAME (e.g. fashion-mnist-smoke) or --config FILE")
        cfg = load_preset(args.preset, with_recipe(args, args.overrides))
    elif args.preset is not None or args.overrides or getattr(args, "recipe", None):
        raise ConfigError(
            "--config FILE is the whole config: give it without --set, --recipe or --preset"
        )
    else:
        cfg = RunConfig.from_file(args.config)
    if args.data is not None:
        check_dataset(cfg, args.data)
    return cfg
