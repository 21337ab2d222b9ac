"""Recipes: named sets of departures from the paper's method, a separate axis from the dataset
and the budget (the preset). A recipe keeps the paper's format (one codebook shared by all
classes, a class-conditional generator, the same artifact) and changes how it is learned.

`paper` has no departure: a preset alone is the paper's method. Every other recipe lists its
departures, each a named change of config keys with its meaning and where it comes from, so a
run can leave any one out (`recipe_without`) to ablate it. Departures are applied to the
preset before the user's own --set items, which win.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from common.errors import ConfigError
from engine.config import RunConfig


@dataclass(frozen=True)
class Departure:
    """One change from the paper's method: `apply` sets its config keys on a preset's config."""

    name: str
    meaning: str
    source: str
    apply: Callable[[RunConfig], None]

    def settings(self, base: RunConfig) -> dict[str, object]:
        """The config keys this departure changes on `base`, with their new values."""
        after = RunConfig.from_dict(base.to_dict())
        self.apply(after)
        return _changed(base.to_dict(), after.to_dict())


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    departures: tuple[Departure, ...] = ()

    def departure(self, name: str) -> Departure:
        for d in self.departures:
            if d.name == name:
                return d
        names = ", ".join(d.name for d in self.departures) or "none"
        raise ConfigError(
            f"recipe {self.name!r} has no departure {name!r} (its departures: {names})"
        )


def _changed(before: dict, after: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in after.items():
        if isinstance(value, dict):
            out.update(_changed(before[key], value, f"{prefix}{key}."))
        elif before.get(key) != value:
            out[f"{prefix}{key}"] = value
    return out


def _herding_start(cfg: RunConfig) -> None:
    c = cfg.condense
    c.coreset_init, c.coreset_fit_steps, c.coreset_fit_lr = "herding", 4000, 0.002


def _class_mean_matching(cfg: RunConfig) -> None:
    cfg.condense.feature_match = "mean"


def _teacher_classifier(cfg: RunConfig) -> None:
    cfg.condense.classifier = "teacher"


def _small_generator_rate(cfg: RunConfig) -> None:
    cfg.condense.lr_generator = 3e-5


def _matching_weight(cfg: RunConfig) -> None:
    cfg.condense.weight_feature = 100.0


def _fresh_net_every_step(cfg: RunConfig) -> None:
    c = cfg.condense
    c.outer_iterations, c.inner_iterations, c.gen_steps = c.total_steps, 1, 1
    c.lr_phi = 0.0


def _double_steps(cfg: RunConfig) -> None:
    cfg.condense.outer_iterations *= 2


HERDING_DM = Recipe(
    name="herding-dm",
    summary="G and the codebook first fitted to the herding coreset (IT-GAN-style inversion), "
    "then the paper's loop with DM's class-mean matching through a fresh random net every step "
    "and the teacher as L_c's classifier; every term of the paper kept",
    departures=(
        Departure(
            "herding-start",
            "fit G and the codebook so that G(z_k, c_y) reproduces the herding coreset (4,000 "
            "Adam steps of pixel MSE) before Algorithm 1, instead of Gaussian codes",
            "IT-GAN (latents from the inversion of real images); herding as in the field",
            _herding_start,
        ),
        Departure(
            "class-mean-matching",
            "L_f matches each class's mean synthetic feature with its real mean, layer by layer, "
            "instead of each image against its own association",
            "DM; CAFE's code (class means, layer-wise)",
            _class_mean_matching,
        ),
        Departure(
            "fresh-net-every-step",
            "phi freshly initialised for every (Z, G) update and never trained (outer "
            "iterations = steps, N = M = 1, phi's rate 0, so its update is skipped)",
            "DM (a randomly initialised ConvNet every iteration)",
            _fresh_net_every_step,
        ),
        Departure(
            "teacher-classifier",
            "L_c through the frozen pretrained teacher on the images instead of a head on "
            "phi's features (meaningless on a random phi)",
            "DiM (logits of nets trained on real data)",
            _teacher_classifier,
        ),
        Departure(
            "matching-weight",
            "L_f weighted 100 against the other terms (at 1 the loop sat idle: class-mean L_f "
            "is about 0.01 against L_intra's 2)",
            "measured (docs/history.md)",
            _matching_weight,
        ),
        Departure(
            "small-generator-rate",
            "G fine-tuned at 3e-5 instead of the paper's 1e-3, which wiped out the fitted detail",
            "GLaD (G fine-tuned at 1e-4); measured",
            _small_generator_rate,
        ),
        Departure(
            "double-steps",
            "twice the preset's (Z, G) updates (1,200 on the smoke presets), the budget the "
            "herding start was tuned at",
            "measured (docs/history.md)",
            _double_steps,
        ),
    ),
)


def _dm_refined_start(cfg: RunConfig) -> None:
    cfg.condense.coreset_refine_updates = 160


HERDING_DM_REFINED = Recipe(
    name="herding-dm-refined",
    summary="herding-dm with its coreset first refined by DM's own pixel updates (160), so G "
    "and the codebook are fitted to a condensed set rather than to real images",
    departures=(
        *HERDING_DM.departures,
        Departure(
            "dm-refined-start",
            "before the fit, 160 DM updates on the coreset's pixels (a fresh ConvNet-128 each, "
            "class-mean embeddings of 256 real images a class, SGD lr 1, momentum 0.5)",
            "DM (main_DM.py); IT-GAN's inversion applied to a condensed set; measured",
            _dm_refined_start,
        ),
    ),
)

PAPER = Recipe(name="paper", summary="the paper's method as the preset gives it (no departure)")

RECIPES: dict[str, Recipe] = {r.name: r for r in (PAPER, HERDING_DM, HERDING_DM_REFINED)}
DEFAULT_RECIPE = "paper"


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r} (choose from: {', '.join(RECIPES)})")
    return RECIPES[name]


def apply_recipe(cfg: RunConfig) -> None:
    """Apply cfg.recipe's departures, minus those in cfg.recipe_without, to a preset's config."""
    recipe = get_recipe(cfg.recipe)
    left_out = {name for name in cfg.recipe_without if name != "none"}
    for name in left_out:
        recipe.departure(name)  # refuses an unknown name
    for departure in recipe.departures:
        if departure.name not in left_out:
            departure.apply(cfg)
    if cfg.condense.coreset_init == "none":  # without a coreset start there is nothing to refine
        cfg.condense.coreset_refine_updates = 0


TABLE_START, TABLE_END = "<!-- recipe-table: start -->", "<!-- recipe-table: end -->"


def markdown_table(recipe: Recipe, base: RunConfig) -> str:
    """docs/recipes.md's table of a recipe's departures: the keys each sets on `base`."""
    lines = [
        TABLE_START,
        f"| departure (`recipe_without=`) | keys on `{base.preset}` | what it changes | from |",
        "| --- | --- | --- | --- |",
    ]
    for d in recipe.departures:
        keys = ", ".join(f"`{k}={v}`" for k, v in d.settings(base).items())
        lines.append(f"| `{d.name}` | {keys} | {d.meaning} | {d.source} |")
    return "\n".join([*lines, TABLE_END])
