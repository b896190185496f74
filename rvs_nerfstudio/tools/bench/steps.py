"""``rvs-bench steps``: training step time relative to the first method, with the methods taking turns.

``rvs-bench quality`` trains one method after another, so a change in the machine's load between runs (about ±15 % on a
shared 2-core machine) lands on some methods and not on others. Here every method's trainer is set up on the same
scene first (same seed, so the same ray batches); after ``warmup`` untimed steps each, they take turns training
``steps_per_turn`` steps. A method's ratio is the median over turns of its time per step divided by the first
method's in the same turn. Writes ``steps.json`` and ``steps.md``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from nerfstudio.engine.trainer import Trainer
from nerfstudio.utils.rich_utils import CONSOLE
from rvs_nerfstudio.data.synth import SceneName
from rvs_nerfstudio.tools import reports, runner
from rvs_nerfstudio.tools.bench import common
from rvs_nerfstudio.tools.bench.common import PresetName

REPORT = "steps"


@dataclass
class StepsConfig:
    """Time the training steps of several methods in turns on one synthetic scene, relative to the first method."""

    methods: Tuple[str, ...] = ("nerfacto", "rvs-nerfacto")
    """Registered methods, with model options as in rvs-bench quality ('rvs-mc:K=8'); ratios are to the first."""
    preset: PresetName = "cpu-small"
    """Benchmark preset: model settings and scene size."""
    scene: SceneName = "object"
    """Synthetic scene, generated deterministically into OUTPUT/scenes."""
    resolution: Optional[int] = None
    """Scene image width and height in pixels (default: the preset's)."""
    first_step: int = 0
    """Number of the first step: step-dependent schedules run as from there. Nerfacto's proposal networks run with a
    gradient on every step before step 10, on every 2nd step up to step 1000, then more rarely up to every 6th step
    from step 5000 on (its proposal warm-up), and without one in between; rvs-nerfacto's on every step."""
    warmup: int = 100
    """Untimed training steps per method before the turns."""
    turns: int = 10
    """Timed turns per method."""
    steps_per_turn: int = 20
    """Training steps per method and turn."""
    seed: int = 0
    """Training seed, the same for every method."""
    output: Path = Path("outputs/rvs-bench")
    """Folder for steps.json, steps.md and the generated scene (in scenes/, shared with rvs-bench quality)."""
    overwrite: bool = False
    """Replace earlier results in OUTPUT."""


def time_in_turns(
    trainers: Dict[str, Trainer], warmup: int, turns: int, steps_per_turn: int, first_step: int = 0
) -> Dict[str, List[float]]:
    """Seconds per step of each trainer in each turn ``{label: [turns]}``, after ``warmup`` untimed steps each; the
    steps are numbered from ``first_step``."""
    for trainer in trainers.values():
        for step in range(first_step, first_step + warmup):
            runner.train_step(trainer, step)
    seconds: Dict[str, List[float]] = {label: [] for label in trainers}
    for turn in range(turns):
        turn_step = first_step + warmup + turn * steps_per_turn
        for label, trainer in trainers.items():
            start = time.perf_counter()
            for step in range(turn_step, turn_step + steps_per_turn):
                runner.train_step(trainer, step)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            seconds[label].append((time.perf_counter() - start) / steps_per_turn)
    return seconds


def ratio_rows(seconds: Dict[str, List[float]]) -> List[Dict[str, object]]:
    """Per method: the median ms per step over turns, and the median, lowest and highest per-turn ratio of its
    time per step to the first method's."""
    reference = next(iter(seconds.values()))
    rows = []
    for label, times in seconds.items():
        ratio, ratio_range = common.turn_ratios(times, reference)
        rows.append({"method": label, "ms_per_step": 1e3 * statistics.median(times), "ratio": ratio, "ratio_range": ratio_range})
    return rows


def markdown(record: Dict[str, object]) -> str:
    """The table with a caption: date, hardware, command and what was timed."""
    config, rows = record["config"], record["rows"]
    setup = (
        f"Scene {config['scene']}, preset {config['preset']}, seed {config['seed']}: {config['warmup']} untimed steps per "
        f"method from step {config['first_step']}, then {config['turns']} turns of {config['steps_per_turn']} steps each."
    )
    lines = [
        reports.caption(record["date"], record["hardware"], record["command"], setup),
        f"| method | ms/step (median) | × {rows[0]['method']} (median over turns) | lowest–highest |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        low, high = row["ratio_range"]
        lines.append(f"| {row['method']} | {row['ms_per_step']:.0f} | {row['ratio']:.2f} | {low:.2f}–{high:.2f} |")
    return "\n".join(lines) + "\n"


def run_steps(config: StepsConfig, command: str) -> Dict[str, object]:
    """Sets up every method's trainer on the scene, times them in turns, writes and returns the record."""
    common.refuse_to_overwrite(config.output, REPORT, config.overwrite)
    specs = common.parse_methods(config.methods)
    for name in ("first_step", "warmup"):
        if getattr(config, name) < 0:
            raise SystemExit(f"{common.COMMAND}: --{name.replace('_', '-')} must be at least 0 (got {getattr(config, name)})")
    common.check_positive(turns=config.turns, steps_per_turn=config.steps_per_turn)
    preset = common.BENCH_PRESETS[config.preset]
    configs = common.method_configs(specs, preset)
    data = common.make_scene(config.output, config.scene, preset, config.resolution)
    with common.trainers_side_by_side(configs, data, config.seed) as trainers:
        seconds = time_in_turns(trainers, config.warmup, config.turns, config.steps_per_turn, config.first_step)
    record = common.record(command, config, seconds_per_step=seconds, rows=ratio_rows(seconds))
    common.write_report(config.output, REPORT, record, markdown(record))
    CONSOLE.print(markdown(record), markup=False, highlight=False, soft_wrap=True)
    return record
