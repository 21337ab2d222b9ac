"""Every benchmark's configuration, one dataclass per `gencond bench` command, each field
declaring its own command-line option (common/cli_options.py): the CLI builds its parsers from
here. Light to import (no torch, no ffcv), like engine/config.py; each benchmark module
re-exports its own class."""

from __future__ import annotations

from dataclasses import dataclass

from common.cli_options import (
    Opt,
    comma,
    internal,
    nested,
    option,
    pairs,
    positive,
)
from common.errors import ConfigError
from data_prep.options import default_workers
from engine.config import EvalConfig, RunConfig, TeacherConfig

GIB = 1 << 30
DEVICE_HELP = "cpu or cuda (default: %(default)s)"


def check_choices(kind: str, values, allowed=None) -> None:
    """ConfigError for a value not in `allowed` (names), or below 1 (counts, allowed None)."""
    for value in values:
        if allowed is None and value < 1:
            raise ConfigError(f"{kind} must be at least 1, got {value}")
        if allowed is not None and value not in allowed:
            raise ConfigError(f"unknown {kind} {value!r} (choose from: {', '.join(allowed)})")


def eval_overrides(items: list[str], base: EvalConfig | None = None) -> EvalConfig:
    """`--set eval.K=V ...` applied to `base` (default: the field's EvalConfig)."""
    holder = RunConfig()
    holder.eval = base or EvalConfig()
    for item in items:
        if not item.strip().startswith("eval."):
            raise ConfigError(f"--set {item}: only eval.* keys apply here")
        holder.override(item)
    holder.eval.check()
    return holder.eval


# --- generated data: loader, peak, profile, speed ------------------------------------------


def generated_classes(**kw):
    """--classes of the generated data a benchmark runs on."""
    return option(1000, "classes of the generated data (default: %(default)s)", type=positive, **kw)


def generated_size():
    """--image-size of the generated data a benchmark runs on."""
    return option(64, "side of the generated square images (default: %(default)s)", type=positive)


@dataclass
class LoaderBenchConfig:
    images: int = option(200_000, "generated training images (default: %(default)s)", type=positive)
    classes: int = generated_classes()
    image_size: int = generated_size()
    batch_size: int = option(
        256, "images per batch of each loader (default: %(default)s)", type=positive
    )
    classes_per_step: int = option(
        100, "class-grouped loader: classes per step (default: %(default)s)", type=positive
    )
    n_per_class: int = option(
        32,
        "class-grouped loader: real images per class per step (default: %(default)s)",
        type=positive,
    )
    grouped_steps: int = option(100, "class-grouped steps timed", flag="--steps", type=positive)
    threads: int = option(
        default_factory=default_workers,
        help="FFCV threads = DataLoader workers (default: %(default)s)",
        type=positive,
    )
    device: str = option("cpu", DEVICE_HELP)
    seed: int = internal(0)
    workdir: str = option(
        "/tmp/gencond-bench-loader",
        "where the generated beton is kept between runs (default: %(default)s)",
    )


@dataclass
class PeakConfig:
    size: int = option(0, "n of n x n x n (0: 8192 CUDA, 2048 CPU)")
    repeats: int = option(0, "timed products (0: 50 CUDA, 5 CPU)")
    warmup: int = internal(3)
    device: str = option("cpu", DEVICE_HELP)
    dtypes: tuple[str, ...] = internal(("fp32", "bf16", "tf32"))
    operand_sets: int = internal(3)
    seed: int = internal(0)


VARIANTS: dict[str, list[str]] = {
    "reference": [],
    "bf16": ["condense.precision=bf16"],
    "channels_last": ["condense.channels_last=true"],
    "fused_optimizer": ["condense.fused_optimizer=true"],
    "compile": ["condense.compile=true"],
    "bf16+channels_last+fused": [
        "condense.precision=bf16",
        "condense.channels_last=true",
        "condense.fused_optimizer=true",
    ],
    "all": [
        "condense.precision=bf16",
        "condense.channels_last=true",
        "condense.fused_optimizer=true",
        "condense.compile=true",
    ],
}


@dataclass
class StepBenchConfig:
    """A preset's condensation step on generated tensors (profile and speed)."""

    preset: str = option(
        "imagenet64-ipc10", "preset whose condensation step is measured (default: %(default)s)"
    )
    channels: int = option(
        3, "image channels of the generated tensors (default: %(default)s)", type=positive
    )
    image_size: int = generated_size()
    num_classes: int = generated_classes(flag="--classes")
    overrides: list[str] = option(
        default_factory=list,
        help="config override on the preset (repeatable)",
        flag="--set",
        action="append",
        metavar="KEY=VALUE",
    )
    device: str = option("cpu", DEVICE_HELP)


@dataclass
class ProfileConfig(StepBenchConfig):
    warmup: int = internal(1)
    # profiled steps; phi's update runs once among them (amortised in profile_bench)
    steps: int = option(2, "profiled steps", type=positive)
    timed: int = option(3, "unprofiled timed steps", type=positive)
    top: int = internal(25)
    peak_tflops: float = option(0.0, "MFU denominator")  # benchmarks/peak.py; 0: no MFU


@dataclass
class SpeedConfig(StepBenchConfig):
    variants: tuple[str, ...] = option(
        tuple(VARIANTS), "speed switches to time, e.g. bf16 compile (default: all)"
    )
    warmup: int = option(
        2,
        "untimed steps per variant before timing (compilation, caches; default: 2)",
        type=positive,
    )
    repeats: int = option(
        5, "timed steps per variant; the median is reported (default: 5)", type=positive
    )
    peak_json: str = option("", "`bench peak` result, for MFU")  # "" = none


# --- data preparation and class scaling --------------------------------------------------


@dataclass
class PrepBenchConfig:
    # one conversion per entry: memory must not grow with it
    batches: tuple[int, ...] = option(
        (2, 4), "train npz batches; one conversion per value (default: 2 4)", type=positive
    )
    images_per_batch: int = option(
        50_000, "images in each generated train npz batch (default: %(default)s)", type=positive
    )
    val_images: int = option(
        10_000, "images in the generated val_data.npz (default: %(default)s)", type=positive
    )
    workers: int = option(
        default_factory=default_workers,
        help="`prep --workers` of the timed conversion (default: %(default)s)",
        type=positive,
    )
    seed: int = internal(0)
    workdir: str = option("/tmp/gencond-bench-prep", "scratch (removed after)")


@dataclass
class ClassScalingConfig:
    classes: tuple[int, ...] = option(
        (100, 1000, 2000), "class counts, one run each (default: 100 1000 2000)", type=positive
    )
    classes_per_step: int = option(
        10, "condense.classes_per_step of every run (default: 10)", type=positive
    )
    ipc: int = internal(10)
    per_class: int = internal(4)  # training images per class
    image_size: int = internal(64)
    steps: int = option(40, "steps per run (default: 40)", type=positive)
    warmup: int = internal(5)
    workdir: str = option("/tmp/gencond-bench-classes", "scratch folder for the generated datasets")


# --- the evaluation protocol against the paper's Table 2 ---------------------------------


@dataclass
class CalibrationConfig:
    datasets: dict[str, str] = option(
        default_factory=dict,
        help="a prepared dataset, e.g. mnist=data/mnist (repeatable)",
        flag="--data",
        parse=pairs(),
        action="append",
        required=True,
        metavar="NAME=DIR",
    )
    ipcs: tuple[int, ...] = option(
        (1, 10), "comma list of IPCs (default: %(default)s)", parse=comma(int)
    )
    sets: tuple[str, ...] = option(
        ("random", "herding"),
        "comma list of coresets to train on: random (random real images), herding (herding "
        "in the feature net's embedding) (default: %(default)s)",
        parse=comma(),
    )
    eval: EvalConfig = option(
        default_factory=EvalConfig,
        help="an eval.* key of the protocol, e.g. eval.seeds=5 (repeatable)",
        flag="--set",
        parse=eval_overrides,
        action="append",
        metavar="KEY=VALUE",
    )
    teacher: TeacherConfig = nested(
        TeacherConfig,
        epochs=Opt(
            "epochs of the ConvNet whose features herding uses (default: 2)",
            "--teacher-epochs",
            argparse={"type": positive},
        ),
        width=Opt(
            "ConvNet width of the net whose features herding uses (default: 128)",
            "--teacher-width",
            argparse={"type": positive},
        ),
    )
    coreset_seed: int = internal(0)  # which random images; the training seeds are 0..seeds-1
    # True: training seed s trains on random draw coreset_seed + s (DC's "random" rows average
    # over experiments that each draw a new subset); False: one draw for every seed
    redraw_random: bool = option(
        False,
        "train seed s on random draw s (DC's random rows average over draws) instead of one "
        "draw for every seed",
    )
    workdir: str = option(
        "runs/calibration", "where the herding feature nets are cached (default: %(default)s)"
    )
    device: str = option("cpu", DEVICE_HELP)


# --- ours against the pixel baselines: throughput, scaling, accuracy, budget -------------

THROUGHPUT_METHODS = ("ours", "dm", "dsa", "mtt", "tesla")
# shape -> (channels, image size, classes, our preset's dataset)
SHAPES = {
    "cifar10": (3, 32, 10, "cifar10"),
    "tiny-imagenet": (3, 64, 200, "tiny-imagenet"),
    "imagenet64": (3, 64, 1000, "imagenet64"),
}


def default_mem_limit_gb(device: str = "cpu") -> float:
    """This machine's RAM, or the GPU's memory."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_properties(0).total_memory / GIB
    import psutil

    return psutil.virtual_memory().total / GIB


@dataclass
class ThroughputConfig:
    shapes: tuple[str, ...] = option(
        tuple(SHAPES), f"of {', '.join(SHAPES)} (default: all)", metavar="SHAPE"
    )
    ipcs: tuple[int, ...] = option(
        (1, 10, 50), "images per class (default: 1 10 50)", type=positive
    )
    methods: tuple[str, ...] = option(
        THROUGHPUT_METHODS,
        f"of {', '.join(THROUGHPUT_METHODS)} (default: all)",
        metavar="METHOD",
    )
    timed_classes: int = option(
        1, "classes per timed step; sweeps are extrapolated (default: 1)", type=positive
    )
    timed_syn_steps: int = option(
        2, "MTT/TESLA student steps timed per iteration (default: 2)", type=positive
    )
    warmup: int = option(1, "untimed steps first (default: 1)")
    repeats: int = option(2, "timed steps; the median is kept (default: 2)", type=positive)
    device: str = option("cpu", DEVICE_HELP)
    # None: this machine's RAM, or the GPU's memory with device cuda (set in __post_init__)
    mem_limit_gb: float | None = option(
        None,
        "a point needing more is reported as not fitting (default: this machine's RAM, or the "
        "GPU's memory with --device cuda)",
    )
    point_timeout_s: float = option(
        300.0, "a slower point is reported as not measured (default: 300)"
    )
    seed: int = internal(0)
    # sizes of one point, overridable for tests: {"image_size": 8, "classes": 3, "width": 8}
    shrink: dict = internal(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.mem_limit_gb:
            self.mem_limit_gb = default_mem_limit_gb(self.device)

    def check(self) -> None:
        check_choices("shape", self.shapes, SHAPES)
        check_choices("method", self.methods, THROUGHPUT_METHODS)
        check_choices("ipc", self.ipcs)
        for name in ("timed_classes", "timed_syn_steps", "repeats"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1")
        if self.warmup < 0 or not self.mem_limit_gb > 0 or not self.point_timeout_s > 0:
            raise ConfigError("warmup must be >= 0, mem-limit-gb and point-timeout-s positive")


TIMING = (
    "methods",
    "timed_classes",
    "timed_syn_steps",
    "warmup",
    "repeats",
    "device",
    "mem_limit_gb",
    "point_timeout_s",
)


@dataclass
class ScalingConfig:
    classes: tuple[int, ...] = option(
        (10, 100, 1000, 10000), "class counts (default: 10 100 1000 10000)", type=positive
    )
    resolutions: tuple[int, ...] = option(
        (32, 64, 128), "image sizes in px (default: 32 64 128)", type=positive
    )
    ipc: int = option(10, "images per class (default: 10)", type=positive)
    timing: ThroughputConfig = nested(ThroughputConfig, *TIMING)

    def check(self) -> None:
        self.timing.check()
        if self.ipc < 1 or min(self.classes) < 1:
            raise ConfigError("ipc and class counts must be at least 1")
        for r in self.resolutions:
            if r < 8:
                raise ConfigError(f"resolution {r} is below 8 px (ConvNet-3's three poolings)")


ACCURACY_METHODS = ("dm", "dsa", "mtt", "tesla", "random", "herding")
DEFAULT_DATA = {"mnist": "/tmp/d/mnist", "fashion-mnist": "/tmp/d/fmnist"}


def _cpu_or_paper(text: str) -> str:
    if text not in ("cpu", "paper"):
        raise ValueError(f"must be cpu or paper, not {text!r}")
    return text


@dataclass
class AccuracyConfig:
    datasets: dict[str, str] = option(
        default_factory=lambda: dict(DEFAULT_DATA),
        help="prepared datasets (repeatable; default: %(default)s)",
        flag="--data",
        parse=pairs("DATASET=PATH"),
        action="append",
        metavar="DATASET=DIR",
    )
    ipcs: tuple[int, ...] = option((1, 10), "images per class (default: 1 10)", type=positive)
    methods: tuple[str, ...] = option(
        ("dm", "dsa", "mtt", "random", "herding"),
        f"of {', '.join(ACCURACY_METHODS)} (default: %(default)s)",
        metavar="METHOD",
    )
    seeds: int = option(2, "evaluation seeds (default: 2)", type=positive)
    eval_epochs: int = option(
        100, "evaluation epochs (default: 100; the paper: 300)", flag="--epochs", type=positive
    )
    eval_width: int = option(128, "width of the evaluation ConvNets (default: 128)", type=positive)
    # condensation / expert net width; 0: the preset's (128)
    net_width: int = option(0, "condensation and expert ConvNet width (0: 128)")
    budget: str = option("cpu", "cpu (shrunk loops) or paper (default: cpu)", parse=_cpu_or_paper)
    condense_seed: int = internal(0)
    device: str = option("cpu", DEVICE_HELP)
    ours: dict[str, str] = option(
        default_factory=dict,
        help="a RUN whose eval.json gives ours (repeatable)",
        parse=pairs("DATASET=PATH"),
        action="append",
        metavar="DATASET=RUN",
    )
    workdir: str = option("/tmp/gencond-bench-accuracy", "cached experts (default: %(default)s)")
    # "method:dataset:ipc" points to run (a job array element's)
    only: tuple[str, ...] = option(
        (),
        "run only these points (what each array element is given)",
        action="append",
        metavar="METHOD:DATASET:IPC",
    )

    def check(self) -> None:
        from pathlib import Path

        check_choices("method", self.methods, ACCURACY_METHODS)
        check_choices("ipc", self.ipcs)
        for name, folder in {**self.datasets}.items():
            if not (Path(folder) / "meta.json").is_file():
                raise ConfigError(
                    f"{name}: {folder} is not a prepared dataset (no meta.json; "
                    f"see `gencond prep {name} --help`)"
                )
        for name, run in self.ours.items():
            if not (Path(run) / "eval.json").is_file():
                raise ConfigError(f"--ours {name}={run}: no eval.json there")
        if self.seeds < 1 or self.eval_epochs < 1:
            raise ConfigError("seeds and eval-epochs must be at least 1")


BUDGET_METHODS = ("ours", "dm", "dsa", "mtt")


def _cpu_baselines() -> dict:
    """MTT's 100 experts x 50 epochs would outlast any CPU budget, so the CPU run trains 2
    experts x 5 epochs on 6000-image epochs (its CPU preset's)."""
    return {
        "mtt": {"num_experts": 2, "train_epochs": 5, "expert_images": 6000, "max_start_epoch": 3}
    }


def _baseline_sets(items: list[str]) -> dict:
    """`--baseline METHOD.KEY=VALUE ...` on top of the CPU settings."""
    import ast

    out = _cpu_baselines()
    for item in items:
        key, _, text = item.partition("=")
        method, _, name = key.partition(".")
        if not name or not text:
            raise ValueError(f"{item!r}: expected METHOD.KEY=VALUE")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        out.setdefault(method.strip(), {})[name.strip()] = value
    return out


def _budget_eval(items: list[str]) -> EvalConfig:
    """The eval.* keys of --set, on 3 seeds and no extra baselines."""
    chosen = [s for s in items if s.strip().startswith("eval.")]
    return eval_overrides(chosen, EvalConfig(seeds=3, baselines=()))


def _preset_sets(items: list[str]) -> tuple[str, ...]:
    """The other keys of --set: ours' preset's."""
    return tuple(s for s in items if not s.strip().startswith("eval."))


def _shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"{text!r}: expected K/N, e.g. 0/2") from None
    return k, n


_shard.show = lambda value: "/".join(str(v) for v in value)


@dataclass
class BudgetConfig:
    data: str = option("data/fashion-mnist", "a prepared dataset folder", required=True)
    dataset: str = internal("")  # "": the name in data's meta.json
    ipc: int = option(10, "images per class (default: 10)", type=positive)
    methods: tuple[str, ...] = option(
        BUDGET_METHODS,
        f"comma list of {', '.join(BUDGET_METHODS)} (default: %(default)s)",
        parse=comma(),
    )
    marks_min: tuple[float, ...] = option(
        (5.0, 10.0, 20.0, 40.0),
        "wall-clock minutes at which each set is snapshotted (default: %(default)s)",
        flag="--marks",
        parse=comma(float),
    )
    preset: str = option("", "ours' preset (default: <dataset>-smoke)")
    # ours' preset's --set keys, then ipc=<ipc> (added in __post_init__)
    preset_overrides: tuple[str, ...] = option(
        (),
        "eval.* keys change the protocol (default: 3 seeds, else the field's); other keys go to "
        "ours' preset (repeatable)",
        flag="--set",
        parse=_preset_sets,
        action="append",
        metavar="KEY=VALUE",
    )
    # condensation steps between clock checks (a resumed call each)
    ours_chunk: int = option(
        100, "ours' condensation steps between clock checks (default: 100)", type=positive
    )
    baseline_budget: str = internal("paper")  # the baselines' presets: paper | cpu
    # method -> {setting: value}
    baseline_overrides: dict = option(
        default_factory=_cpu_baselines,
        help="a pixel baseline's setting, e.g. dm.batch_real=64 (repeatable)",
        flag="--baseline",
        parse=_baseline_sets,
        action="append",
        metavar="METHOD.KEY=VALUE",
    )
    # the eval.* keys of the same --set option
    eval: EvalConfig = option(
        default_factory=lambda: EvalConfig(seeds=3, baselines=()),
        flag="--set",
        parse=_budget_eval,
    )
    coresets: tuple[str, ...] = internal(("random", "herding"))
    seed: int = internal(0)
    workdir: str = option(
        "runs/budget", "snapshots, ours' runs, the herding net (default: %(default)s)"
    )
    device: str = option("cpu", DEVICE_HELP)
    phase: str = option(
        "all",
        "condense: only make the snapshots; evaluate: only train on them; all: both; report: "
        "only rebuild the JSON, markdown and plot from the rows (default: %(default)s)",
        choices=("all", "condense", "evaluate", "report"),
    )
    # evaluate every N-th (method, mark, seed) from K
    shard: tuple[int, int] = option(
        (0, 1),
        "evaluate every N-th (method, mark, seed) starting at K, so N processes can share the "
        "evaluations (default: %(default)s)",
        parse=_shard,
        metavar="K/N",
    )

    # keys a workdir's snapshots and rows do not depend on
    PER_PROCESS = ("methods", "phase", "shard", "workdir")

    def __post_init__(self) -> None:
        """What the command line leaves to the data: the dataset's name, ours' preset
        (<dataset>-smoke) and ours' IPC (the last preset override, as the workdir records)."""
        from pathlib import Path

        if not self.dataset and (Path(self.data) / "meta.json").is_file():
            from data_prep.meta import load_meta

            self.dataset = load_meta(self.data).dataset
        self.preset = self.preset or f"{self.dataset}-smoke"
        if self.preset_overrides[-1:] != (f"ipc={self.ipc}",):
            self.preset_overrides = (*self.preset_overrides, f"ipc={self.ipc}")

    def check(self) -> None:
        from pathlib import Path

        unknown = sorted(set(self.methods) - set(BUDGET_METHODS))
        if unknown:
            raise ConfigError(
                f"unknown method {unknown[0]!r} (choose from: {', '.join(BUDGET_METHODS)})"
            )
        if not self.marks_min or any(m <= 0 for m in self.marks_min):
            raise ConfigError("--marks: give positive minutes, e.g. 5,10,20,40")
        if list(self.marks_min) != sorted(self.marks_min):
            raise ConfigError("--marks must increase")
        if self.phase not in ("all", "condense", "evaluate", "report"):
            raise ConfigError(f"--phase {self.phase!r}: choose all, condense, evaluate or report")
        k, n = self.shard
        if not (n >= 1 and 0 <= k < n):
            raise ConfigError(f"--shard {k}/{n}: expected K/N with 0 <= K < N")
        if not (Path(self.data) / "meta.json").is_file():
            raise ConfigError(f"{self.data}: not a prepared dataset (no meta.json)")
        self.eval.check()


# --- a recipe against the paper's preset and the coresets -----------------------------------


@dataclass
class RecipeBenchConfig:
    data: str = option("data/fashion-mnist", "a prepared dataset folder", required=True)
    preset: str = option("", "the preset both runs use (default: <dataset>-smoke)")
    recipe: str = option("herding-dm", "the recipe measured (default: %(default)s)")
    pretrained: str = option(
        "", "a PRE folder both runs reuse (default: pretrain once into WORKDIR/pretrained)"
    )
    preset_overrides: tuple[str, ...] = option(
        (),
        "a --set item of both runs, e.g. ipc=1 (repeatable)",
        flag="--set",
        action="append",
        metavar="KEY=VALUE",
    )
    seeds: int = option(10, "evaluation seeds of every set (default: %(default)s)", type=positive)
    epochs: int = option(0, "evaluation epochs (default: 0, the preset's)")
    no_faithful: bool = option(
        False,
        "skip the faithful row (by default the paper's preset, recipe paper, is condensed and "
        "evaluated beside the recipe)",
        action="store_true",
    )
    ablate: bool = option(
        False,
        "also condense the recipe minus each departure and evaluate each (its ablation table)",
        action="store_true",
    )
    ablate_seeds: int = option(
        5, "seeds of each ablation row (default: %(default)s)", type=positive
    )
    baselines: tuple[str, ...] = option(
        ("random", "herding", "plain"),
        "comma list of the coresets evaluated beside it (default: random,herding,plain)",
        parse=comma(),
    )
    workdir: str = option("runs/recipe", "the runs and their evaluations (default: %(default)s)")
    device: str = option("cpu", DEVICE_HELP)

    def __post_init__(self) -> None:
        from pathlib import Path

        if not self.preset and (Path(self.data) / "meta.json").is_file():
            from data_prep.meta import load_meta

            self.preset = f"{load_meta(self.data).dataset}-smoke"

    def check(self) -> None:
        from pathlib import Path

        from engine.config import BASELINES

        if not (Path(self.data) / "meta.json").is_file():
            raise ConfigError(f"{self.data}: not a prepared dataset (no meta.json)")
        check_choices("baseline", self.baselines, BASELINES)
        if self.epochs < 0:
            raise ConfigError(f"--epochs must be 0 (the preset's) or more, got {self.epochs}")
