"""What the ``rvs-bench`` subcommands share: presets, method strings, method configs, scenes and report files.

Every method runs on nerfstudio's ``VanillaDataManager`` (:func:`in_main_process`), so one seed gives every
method the same ray batches and no data worker competes with training for the CPU.
"""

from __future__ import annotations

import contextlib
import copy
import json
import statistics
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Dict, Iterator, Literal, Optional, Sequence, Tuple

from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from rvs_nerfstudio.data.parsers import AutoDataParserConfig, LLFFDataParserConfig
from rvs_nerfstudio.data.synth import Layout, SceneName, SynthConfig, generate_scene
from rvs_nerfstudio.tools import presets, reports, runner

COMMAND = "rvs-bench"

PresetName = Literal["cpu-small", "cpu-long", "cpu-full", "gpu"]


@dataclass(frozen=True)
class BenchPreset:
    """What a benchmark preset fixes besides the methods."""

    model_preset: str
    """Key of :data:`rvs_nerfstudio.tools.presets.PRESETS` applied to every method."""
    steps: int
    resolution: int
    num_train: int
    num_test: int
    rays_per_batch: Optional[int] = None
    """Training rays per step; None keeps the model preset's (nerfacto: 4096)."""


BENCH_PRESETS: Dict[str, BenchPreset] = {
    # Measured on 2 AMD EPYC cores (quiet, 2 threads), nerfacto / rvs-nerfacto / rvs-mc K=8: 0.15 / 0.17 / 0.14 s per
    # step and about 5 s per evaluation of the 8 held-out views: the default 6 runs of 600 steps take ~12 min.
    "cpu-small": BenchPreset("cpu-small", steps=600, resolution=64, num_train=40, num_test=8),
    # The same models for 3000 steps on 96-pixel views (about 4 passes over the training rays), where the methods are
    # nearer convergence than after cpu-small's first minutes: 22-25 min of training per run on one thread while
    # another run used the second core (0.44-0.50 s per step).
    "cpu-long": BenchPreset("cpu-small", steps=3000, resolution=96, num_train=40, num_test=8),
    # nerfacto's full model sizes and sample counts on a CPU: 512-ray steps (about 1.2 s each on one core) and
    # 32-pixel views, for step-time and render-speed ratios where users are.
    "cpu-full": BenchPreset("full", steps=1000, resolution=32, num_train=40, num_test=8, rays_per_batch=512),
    "gpu": BenchPreset("full", steps=30000, resolution=256, num_train=100, num_test=20),
}


@dataclass(frozen=True)
class MethodSpec:
    """A registered method and the model-config values to set on it, parsed from e.g. ``rvs-mc:K=8``."""

    label: str
    """The text it was parsed from, used to name the method in the results."""
    name: str
    model_options: Tuple[Tuple[str, Any], ...] = ()
    """(option, value) pairs: a model-config field, or a dotted path from the trainer config."""


OPTION_ALIASES = {"K": "num_radiance_samples"}
"""Short option names in method strings → model-config fields."""


def _parse_value(text: str) -> Any:
    """``"8"`` → 8, ``"0.5"`` → 0.5, ``"true"``/``"false"`` → bool, ``"128/64"`` → (128, 64) (a tuple, e.g. sample
    counts per proposal level), anything else stays a string."""
    if "/" in text:
        return tuple(_parse_value(part) for part in text.split("/"))
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_method(text: str) -> MethodSpec:
    """Parses ``name[:option=value[,option=value...]]``; a one-line ``SystemExit`` for malformed text."""
    name, _, options = text.partition(":")
    pairs = []
    for item in options.split(",") if options else ():
        key, equals, value = (part.strip() for part in item.partition("="))
        if not (key and equals and value):
            raise SystemExit(f"{COMMAND}: cannot read option {item!r} of method {text!r}; write name:option=value,option=value")
        pairs.append((OPTION_ALIASES.get(key, key), _parse_value(value)))
    if not name.strip():
        raise SystemExit(f"{COMMAND}: method {text!r} has no name; write e.g. rvs-mc:K=8")
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise SystemExit(f"{COMMAND}: method {text!r} sets an option twice")
    return MethodSpec(text, name.strip(), tuple(pairs))


def parse_methods(texts: Sequence[str]) -> Tuple[MethodSpec, ...]:
    """:func:`parse_method` of each; a one-line ``SystemExit`` unless there is at least one and each is unique."""
    specs = tuple(parse_method(text) for text in texts)
    if not specs or len({spec.label for spec in specs}) != len(specs):
        raise SystemExit(f"{COMMAND}: give at least one method, each once")
    return specs


def in_main_process(datamanager: VanillaDataManagerConfig) -> VanillaDataManagerConfig:
    """``datamanager``'s settings on nerfstudio's ``VanillaDataManager``, which draws ray batches in the main process.

    Nerfacto's ``ParallelDataManager`` draws them in a worker process that competes with training for the CPU
    and has its own random stream; with the same data manager everywhere, one seed gives every method the same
    ray batches and the timings compare samplers and fields, not data loading.
    """
    names = [f.name for f in fields(VanillaDataManagerConfig) if f.init and f.name != "_target"]
    return VanillaDataManagerConfig(**{name: getattr(datamanager, name) for name in names})


def method_config(spec: MethodSpec, methods: Dict[str, TrainerConfig], model_preset: str) -> TrainerConfig:
    """A copy of the method's registered config on the main-process data manager, with ``model_preset`` applied,
    then the spec's model options."""
    if spec.name not in methods:
        raise SystemExit(f"{COMMAND}: unknown method {spec.name!r}; registered: {', '.join(sorted(methods))}")
    config = copy.deepcopy(methods[spec.name])
    config.pipeline.datamanager = in_main_process(config.pipeline.datamanager)
    config = presets.apply(config, model_preset)
    for key, value in spec.model_options:
        set_option(config, key, value, spec)
    return config


def set_option(config: TrainerConfig, key: str, value: Any, spec: MethodSpec) -> None:
    """Sets a model option (``density_padding``) or, for a dotted key, the config value at that path from the trainer
    config (``optimizers.proposal_networks.optimizer.lr``); an int given for a float is stored as a float."""
    target, name = presets.holder_of(config, key if "." in key else f"pipeline.model.{key}")
    if target is None or not hasattr(target, name):
        where = f"{spec.name}'s model" if "." not in key else f"{spec.name}'s config"
        raise SystemExit(f"{COMMAND}: {where} has no option {key!r} (in {spec.label!r})")
    if isinstance(getattr(target, name), float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    setattr(target, name, value)


def method_configs(specs: Sequence[MethodSpec], preset: BenchPreset) -> Dict[str, TrainerConfig]:
    """``{label: config}`` of :func:`method_config` for each spec with the preset's model settings and ray batch,
    among every method installed."""
    from nerfstudio.configs.method_configs import all_methods  # slow: it discovers every installed method

    configs = {spec.label: method_config(spec, all_methods, preset.model_preset) for spec in specs}
    if preset.rays_per_batch is not None:
        for config in configs.values():
            config.pipeline.datamanager.train_num_rays_per_batch = preset.rays_per_batch
    return configs


def make_scene(
    output: Path, scene: SceneName, preset: BenchPreset, resolution: int | None = None, layout: Layout = "nerfstudio"
) -> Path:
    """Generates (or regenerates, byte for byte) the synthetic scene into OUTPUT/scenes/NAME (NAME-LAYOUT for layouts
    other than nerfstudio's); returns its folder."""
    folder = scene if layout == "nerfstudio" else f"{scene}-{layout}"
    return generate_scene(
        SynthConfig(
            output=output / "scenes" / folder, scene=scene, layout=layout, resolution=resolution or preset.resolution,
            num_train=preset.num_train, num_test=preset.num_test, seed=0, overwrite=True,
        )
    )


def parse_as_users_do(config: TrainerConfig, layout: Layout) -> TrainerConfig:
    """``config`` reading ``layout`` with the parser a user of that method names for it: methods on ``auto-data``
    (ours) keep it; others (nerfacto) get nerfstudio's parser of the layout (``blender-data``; ``llff-data`` is ours:
    nerfstudio has none). In place; returns ``config``."""
    datamanager = config.pipeline.datamanager
    if not isinstance(datamanager.dataparser, AutoDataParserConfig):
        datamanager.dataparser = {
            "nerfstudio": NerfstudioDataParserConfig, "blender": BlenderDataParserConfig, "llff": LLFFDataParserConfig
        }[layout]()
    return config


def check_positive(**values: int) -> None:
    """A one-line ``SystemExit`` for the first option below 1."""
    for name, value in values.items():
        if value < 1:
            raise SystemExit(f"{COMMAND}: --{name.replace('_', '-')} must be at least 1 (got {value})")


def write_report(output: Path, name: str, record: Dict[str, Any], markdown: str) -> None:
    """``NAME.json`` (every number) and ``NAME.md`` (the tables) in ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    (output / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    (output / f"{name}.md").write_text(markdown, encoding="utf-8")


def report_files(output: Path, name: str, *extra: str) -> Tuple[Path, ...]:
    """The files :func:`write_report` writes for ``name`` (and ``extra`` ones), for the overwrite check."""
    return tuple(output / file for file in (f"{name}.json", f"{name}.md", *extra))


def refuse_to_overwrite(output: Path, name: str, overwrite: bool, *extra: str) -> None:
    """The shared overwrite check of every subcommand's report files."""
    reports.refuse_to_overwrite(COMMAND, report_files(output, name, *extra), overwrite)


@contextlib.contextmanager
def trainers_side_by_side(configs: Dict[str, TrainerConfig], data: Path, seed: int) -> Iterator[Dict[str, Trainer]]:
    """``{label: trainer}``, every method set up on ``data`` with the same ``seed`` (so the same ray batches),
    logging into a scratch folder; their data workers are stopped on exit."""
    with tempfile.TemporaryDirectory() as scratch:
        trainers = {
            label: runner.setup_trainer(method, data, None, Path(scratch) / str(i), seed)
            for i, (label, method) in enumerate(configs.items())
        }
        try:
            yield trainers
        finally:
            for trainer in trainers.values():
                runner.stop_data_workers(trainer)


def turn_ratios(values: Sequence[float], reference: Sequence[float]) -> Tuple[float, Tuple[float, float]]:
    """The median and the (lowest, highest) of the per-turn ratios ``values[i] / reference[i]``."""
    ratios = [value / first for value, first in zip(values, reference)]
    return statistics.median(ratios), (min(ratios), max(ratios))


def record(command: str, config: Any, **numbers: Any) -> Dict[str, Any]:
    """A report's record: date, command, hardware, the subcommand's options, then ``numbers``."""
    options = {key: str(value) if isinstance(value, Path) else value for key, value in vars(config).items()}
    return {"date": reports.now(), "command": command, "hardware": reports.hardware(), "config": options, **numbers}
