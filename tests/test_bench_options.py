"""`gencond bench ...` options come from the config dataclasses' fields (common/cli_options.py):
every option maps to a field and every field says which option sets it (or that none does);
the spellings and defaults from before that change are still accepted."""

import argparse
import dataclasses
import sys

import pytest

from benchmarks import config as c
from common.cli_options import KEY, flags, from_args, to_argv, undeclared
from launch import cli
from launch.commands.baselines import ArrayOptions

CONFIGS = {
    "throughput": (c.ThroughputConfig,),
    "scaling": (c.ScalingConfig,),
    "accuracy": (c.AccuracyConfig, ArrayOptions),
    "budget": (c.BudgetConfig,),
    "loader": (c.LoaderBenchConfig,),
    "prep": (c.PrepBenchConfig,),
    "classes": (c.ClassScalingConfig,),
    "peak": (c.PeakConfig,),
    "profile": (c.ProfileConfig,),
    "speed": (c.SpeedConfig,),
    "calibrate": (c.CalibrationConfig,),
    "recipe": (c.RecipeBenchConfig,),
}

# every option of every bench command as it was spelled before the options came from the
# dataclasses (recorded from `gencond bench X --help` at 2c99ebf)
BEFORE = {
    "throughput": "--shapes --ipcs --methods --timed-classes --timed-syn-steps --warmup "
    "--repeats --device --mem-limit-gb --point-timeout-s --out",
    "scaling": "--classes --resolutions --ipc --methods --timed-classes --timed-syn-steps "
    "--warmup --repeats --device --mem-limit-gb --point-timeout-s --out",
    "accuracy": "--data --ipcs --methods --seeds --epochs --eval-width --net-width --budget "
    "--ours --device --workdir --out --cluster --partition --time --only",
    "budget": "--data --ipc --methods --marks --preset --set --baseline --ours-chunk --device "
    "--workdir --phase --shard --out",
    "loader": "--images --classes --image-size --batch-size --classes-per-step --n-per-class "
    "--steps --threads --device --workdir --out",
    "prep": "--batches --images-per-batch --val-images --workers --workdir --out",
    "classes": "--classes --classes-per-step --steps --workdir --out",
    "peak": "--device --size --repeats --out",
    "profile": "--preset --channels --classes --image-size --set --device --out --steps "
    "--timed --peak-tflops",
    "speed": "--preset --channels --classes --image-size --set --device --out --variants "
    "--repeats --warmup --peak-json",
    "calibrate": "--data --ipcs --sets --set --redraw-random --teacher-epochs --teacher-width "
    "--workdir --device --out",
    # added after the change, declared on its dataclass from the start
    "recipe": "--data --preset --recipe --pretrained --set --seeds --epochs --no-faithful "
    "--ablate --ablate-seeds --baselines --workdir --device --out",
}


def _bench_parsers() -> dict[str, argparse.ArgumentParser]:
    def sub(parser):
        return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))

    return dict(sub(sub(cli.build_parser()).choices["bench"]).choices)


def _options(parser) -> set[str]:
    return {
        a.option_strings[-1]
        for a in parser._actions
        if a.option_strings and "-h" not in a.option_strings
    }


def test_every_bench_command_has_its_configs():
    assert set(_bench_parsers()) == set(CONFIGS) == set(BEFORE)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_options_map_one_to_one_to_fields(name):
    parser = _bench_parsers()[name]
    classes = CONFIGS[name]
    # every field declares its option, or that no option sets it
    assert [(cls.__name__, f) for cls in classes for f in undeclared(cls)] == []
    declared = {f.flag for cls in classes for f in flags(cls)}
    assert _options(parser) - {"--out"} == declared  # no option without a field, nor back
    # each option's flag is declared by exactly one field, unless fields share it on purpose
    # (budget's --set feeds ours' preset and the eval.* protocol)
    owners = [f.flag for cls in classes for f in flags(cls)]
    shared = {flag for flag in owners if owners.count(flag) > 1}
    assert shared == ({"--set"} if name == "budget" else set())


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_the_spellings_from_before_are_still_accepted(name):
    assert _options(_bench_parsers()[name]) == set(BEFORE[name].split())


def test_nested_fields_declare_their_sub_options():
    for cls in {cls for group in CONFIGS.values() for cls in group}:
        for f in dataclasses.fields(cls):
            spec = f.metadata[KEY]
            for name in getattr(spec, "options", {}):
                assert name in {s.name for s in dataclasses.fields(spec.factory)}


def _parse(*argv):
    return cli.build_parser().parse_args(["bench", *argv])


def test_defaults_are_the_dataclass_defaults_as_before():
    """Nothing given: each command's config is its dataclass's defaults, equal to the option
    defaults the commands had before."""
    cfg = from_args(c.LoaderBenchConfig, _parse("loader"))
    assert (cfg.images, cfg.classes, cfg.image_size, cfg.batch_size) == (200_000, 1000, 64, 256)
    assert (cfg.classes_per_step, cfg.n_per_class, cfg.grouped_steps) == (100, 32, 100)
    assert cfg.workdir == "/tmp/gencond-bench-loader" and cfg.device == "cpu"
    cfg = from_args(c.ThroughputConfig, _parse("throughput"))
    assert cfg.shapes == ("cifar10", "tiny-imagenet", "imagenet64") and cfg.ipcs == (1, 10, 50)
    assert (cfg.timed_classes, cfg.timed_syn_steps, cfg.warmup, cfg.repeats) == (1, 2, 1, 2)
    assert cfg.mem_limit_gb == c.default_mem_limit_gb("cpu") and cfg.point_timeout_s == 300.0
    cfg = from_args(c.ScalingConfig, _parse("scaling"))
    assert cfg.classes == (10, 100, 1000, 10000) and cfg.resolutions == (32, 64, 128)
    assert cfg.ipc == 10 and cfg.timing.methods == c.THROUGHPUT_METHODS
    cfg = from_args(c.SpeedConfig, _parse("speed"))
    assert cfg.variants == tuple(c.VARIANTS) and (cfg.repeats, cfg.warmup) == (5, 2)
    cfg = from_args(c.AccuracyConfig, _parse("accuracy"))
    assert cfg.datasets == c.DEFAULT_DATA and cfg.methods == (
        "dm",
        "dsa",
        "mtt",
        "random",
        "herding",
    )
    assert (cfg.seeds, cfg.eval_epochs, cfg.eval_width, cfg.net_width) == (2, 100, 128, 0)
    jobs = from_args(ArrayOptions, _parse("accuracy"))
    assert (jobs.cluster, jobs.partition, jobs.time_min) == (None, None, 120)


def test_values_given_reach_the_fields():
    args = _parse(
        "calibrate", "--data", "mnist=d/m", "--ipcs", "1,50", "--sets", "random",
        "--set", "eval.seeds=3", "--teacher-width", "16", "--redraw-random",
    )  # fmt: skip
    cfg = from_args(c.CalibrationConfig, args)
    assert cfg.datasets == {"mnist": "d/m"} and cfg.ipcs == (1, 50) and cfg.sets == ("random",)
    assert cfg.eval.seeds == 3 and cfg.redraw_random
    assert (cfg.teacher.width, cfg.teacher.epochs) == (16, 2)
    args = _parse(
        "budget", "--data", "nowhere", "--ipc", "3", "--marks", "1,2.5", "--methods", "dm,mtt",
        "--set", "eval.seeds=2", "--set", "gan.steps=4", "--baseline", "dm.batch_real=8",
        "--shard", "1/2", "--phase", "evaluate",
    )  # fmt: skip
    cfg = from_args(c.BudgetConfig, args)
    assert cfg.marks_min == (1.0, 2.5) and cfg.methods == ("dm", "mtt") and cfg.shard == (1, 2)
    assert cfg.eval.seeds == 2 and cfg.eval.baselines == ()
    assert cfg.preset_overrides == ("gan.steps=4", "ipc=3")
    assert cfg.baseline_overrides["dm"] == {"batch_real": 8}
    assert cfg.baseline_overrides["mtt"]["num_experts"] == 2  # the CPU settings stay
    args = _parse("speed", "--classes", "10", "--set", "ipc=1", "--variants", "bf16")
    cfg = from_args(c.SpeedConfig, args)
    assert (cfg.num_classes, cfg.overrides, cfg.variants) == (10, ["ipc=1"], ("bf16",))
    cfg = from_args(c.ThroughputConfig, _parse("throughput", "--mem-limit-gb", "2.5"))
    assert cfg.mem_limit_gb == 2.5


@pytest.mark.parametrize(
    "argv, message",
    [
        (["budget", "--data", "d", "--shard", "1-2"], "--shard '1-2': expected K/N"),
        (["budget", "--data", "d", "--baseline", "dm"], "--baseline 'dm': expected METHOD."),
        (["calibrate", "--data", "mnist"], "--data 'mnist': expected NAME=DIR"),
        (["calibrate", "--data", "m=d", "--set", "ipc=3"], "only eval.* keys apply here"),
        (["accuracy", "--budget", "gpu"], "--budget must be cpu or paper, not 'gpu'"),
    ],
)
def test_bad_values_are_config_errors(argv, message):
    from common.errors import ConfigError

    name = argv[0]
    with pytest.raises(ConfigError, match=message.replace("*", r"\*").replace(".", r"\.")):
        from_args(CONFIGS[name][0], _parse(*argv))


def test_a_job_arrays_command_line_gives_the_same_config():
    cfg = from_args(
        c.AccuracyConfig,
        _parse("accuracy", "--data", "a=x", "--data", "b=y", "--seeds", "3", "--budget", "paper"),
    )
    names = ("datasets", "seeds", "eval_epochs", "budget", "device", "workdir", "ipcs")
    again = from_args(c.AccuracyConfig, _parse("accuracy", *to_argv(cfg, *names)))
    assert again == cfg


def test_the_parser_loads_no_benchmark_stack():
    import subprocess

    code = "import sys; from launch import cli; cli.build_parser(); print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "False", r.stderr
