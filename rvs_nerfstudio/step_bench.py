"""``rvs-step-bench``: training step time relative to the first method, with the methods taking turns.

``rvs-bench`` trains one method after another, so a change in the machine's load between runs (about ±15 % on a
shared 2-core machine) lands on some methods and not on others. Here every method's trainer is set up on the same
scene first (same seed, so the same ray batches); after ``warmup`` untimed steps each, they take turns training
``steps_per_turn`` steps. A method's ratio is the median over turns of its time per step divided by the first
method's in the same turn.
"""

from __future__ import annotations

import datetime
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple

import torch
import tyro

from nerfstudio.engine.trainer import Trainer
from nerfstudio.utils.rich_utils import CONSOLE
from rvs_nerfstudio import bench, runner
from rvs_nerfstudio.compat import quiet_library_warnings
from rvs_nerfstudio.synth import SceneName


@dataclass
class StepBenchConfig:
    """Time the training steps of several methods in turns on one synthetic scene, relative to the first method."""

    methods: Tuple[str, ...] = ("nerfacto", "rvs-nerfacto")
    """Registered methods, with model options as in rvs-bench ('rvs-mc:K=8'); ratios are to the first."""
    preset: Literal["cpu-small", "gpu"] = "cpu-small"
    """rvs-bench preset: model settings and scene size."""
    scene: SceneName = "object"
    """Synthetic scene, generated deterministically into OUTPUT/scenes."""
    resolution: Optional[int] = None
    """Scene image width and height in pixels (default: the preset's)."""
    warmup: int = 100
    """Untimed training steps per method before the turns."""
    turns: int = 10
    """Timed turns per method."""
    steps_per_turn: int = 20
    """Training steps per method and turn."""
    seed: int = 0
    """Training seed, the same for every method."""
    output: Path = Path("outputs/rvs-bench")
    """Folder whose scenes/ holds the generated scene (shared with rvs-bench)."""


def time_in_turns(trainers: Dict[str, Trainer], warmup: int, turns: int, steps_per_turn: int) -> Dict[str, List[float]]:
    """Seconds per step of each trainer in each turn ``{label: [turns]}``, after ``warmup`` untimed steps each."""
    for trainer in trainers.values():
        for step in range(warmup):
            runner.train_step(trainer, step)
    seconds: Dict[str, List[float]] = {label: [] for label in trainers}
    for turn in range(turns):
        first_step = warmup + turn * steps_per_turn
        for label, trainer in trainers.items():
            start = time.perf_counter()
            for step in range(first_step, first_step + steps_per_turn):
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
        ratios = [time_per_step / first for time_per_step, first in zip(times, reference)]
        rows.append({
            "method": label,
            "ms_per_step": 1e3 * statistics.median(times),
            "ratio": statistics.median(ratios),
            "ratio_range": (min(ratios), max(ratios)),
        })
    return rows


def markdown(config: StepBenchConfig, rows: List[Dict[str, object]], command: str) -> str:
    """The table with a caption: date, hardware, command and what was timed."""
    hw = bench.hardware()
    first = rows[0]["method"]
    lines = [
        f"Measured {datetime.date.today().isoformat()} on {hw['cpu']} ({hw['cpu_cores']} cores, {hw['torch_threads']} "
        f"torch threads), device {hw['device']}, torch {hw['torch']}, nerfstudio {hw['nerfstudio']}. Scene "
        f"{config.scene}, preset {config.preset}, seed {config.seed}: {config.warmup} untimed steps per method, then "
        f"{config.turns} turns of {config.steps_per_turn} steps each.",
        "",
        f"Command: `{command}`",
        "",
        f"| method | ms/step (median) | × {first} (median over turns) | lowest–highest |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        low, high = row["ratio_range"]
        lines.append(f"| {row['method']} | {row['ms_per_step']:.0f} | {row['ratio']:.2f} | {low:.2f}–{high:.2f} |")
    return "\n".join(lines) + "\n"


def run_step_bench(config: StepBenchConfig) -> List[Dict[str, object]]:
    """Sets up every method's trainer on the scene, times them in turns and returns :func:`ratio_rows`."""
    specs = [bench.parse_method(text) for text in config.methods]
    if not specs or len({spec.label for spec in specs}) != len(specs):
        raise SystemExit("rvs-step-bench: give at least one method, each once")
    if config.warmup < 0 or config.turns < 1 or config.steps_per_turn < 1:
        raise SystemExit("rvs-step-bench: --warmup must be >= 0, --turns and --steps-per-turn >= 1")
    from nerfstudio.configs.method_configs import all_methods  # slow: it discovers every installed method

    preset = bench.BENCH_PRESETS[config.preset]
    scenes = bench.BenchConfig(scenes=(config.scene,), resolution=config.resolution, output=config.output)
    data = bench.make_scenes(scenes, preset)[config.scene]
    with tempfile.TemporaryDirectory() as scratch:
        trainers = {
            spec.label: runner.setup_trainer(
                bench.method_config(spec, all_methods, preset.model_preset), data, None, Path(scratch) / str(i), config.seed
            )
            for i, spec in enumerate(specs)
        }
        try:
            seconds = time_in_turns(trainers, config.warmup, config.turns, config.steps_per_turn)
        finally:
            for trainer in trainers.values():
                runner.stop_data_workers(trainer)
    return ratio_rows(seconds)


def entrypoint() -> None:
    """Console script ``rvs-step-bench``."""
    quiet_library_warnings()
    config = tyro.cli(StepBenchConfig)
    rows = run_step_bench(config)
    command = shlex.join(["rvs-step-bench", *sys.argv[1:]])
    CONSOLE.print(markdown(config, rows, command), markup=False, highlight=False, soft_wrap=True)


if __name__ == "__main__":
    entrypoint()
