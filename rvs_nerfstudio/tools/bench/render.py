"""``rvs-bench render``: render speed and quality of the held-out views, methods taking turns, with rvs-mc's K dial.

Every method's trainer is set up on the same scene and trained ``train_steps`` steps with the same seed. Then, in
each turn, every entry renders all held-out views as ``ns-eval`` does: each method, and each rvs-mc method once per
K of ``--k`` (set after training, as the viewer's *Render K* slider does, so one trained model gives the whole
dial). Per entry: PSNR, rays per second (median over turns) and its ratio to the first entry's in the same turn, the
points per ray at which the proposal networks and the radiance field ran, and the render time per ray split into
density levels, the rest of the sampler, the radiance field and everything else. Writes ``render.json``,
``render.md`` and ``render_dial.png``.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from nerfstudio.engine.trainer import Trainer
from nerfstudio.utils.rich_utils import CONSOLE
from rvs_nerfstudio.data.synth import SceneName
from rvs_nerfstudio.tools import reports, runner
from rvs_nerfstudio.tools.bench import common
from rvs_nerfstudio.tools.bench.common import MethodSpec, PresetName

REPORT = "render"
PLOT = "render_dial.png"
PHASES = ("density", "sampling", "radiance", "other")


@dataclass
class RenderConfig:
    """Render the held-out views with several methods in turns: speed, quality, field calls and time per phase."""

    methods: Tuple[str, ...] = ("rvs-nerfacto", "rvs-mc:K=8", "nerfacto")
    """Registered methods, with model options as in rvs-bench quality; speed ratios are to the first entry."""
    k: Tuple[int, ...] = ()
    """Also render each rvs-mc method at these K after training (e.g. 1 2 4 8 16 32 64); empty: its own K only."""
    preset: PresetName = "cpu-full"
    """Benchmark preset: model settings, ray batch and scene size (cpu-full: nerfacto's full model sizes)."""
    scene: SceneName = "object"
    """Synthetic scene, generated deterministically into OUTPUT/scenes."""
    resolution: Optional[int] = None
    """Scene image width and height in pixels (default: the preset's)."""
    train_steps: int = 0
    """Training steps per method before rendering (0: untrained, for speed alone; the methods' render cost per ray
    does not depend on their weights)."""
    turns: int = 3
    """Renders of all held-out views per entry, taken in turns."""
    seed: int = 0
    """Training seed, the same for every method."""
    output: Path = Path("outputs/rvs-bench")
    """Folder for render.json, render.md, render_dial.png and the generated scene."""
    overwrite: bool = False
    """Replace earlier results in OUTPUT."""


@dataclass
class Entry:
    """One line of the table: a trained method, rendered at evaluation K ``k`` (None: as configured)."""

    label: str
    trainer: Trainer
    meter: runner.EvalMeter
    k: Optional[int] = None

    def render(self) -> Dict[str, object]:
        """Renders every held-out view once; the metrics, rays per second, field calls and time per phase."""
        if self.k is not None:
            self.trainer.pipeline.model.set_eval_num_radiance_samples(self.k)
        with self.meter.measure() as cost:
            metrics = runner.evaluate(self.trainer)
        return {"metrics": metrics, **asdict(cost)}


def entries(specs: Sequence[MethodSpec], trainers: Dict[str, Trainer], ks: Tuple[int, ...]) -> List[Entry]:
    """Each method as configured, and each rvs-mc method at every K of ``ks``, labelled ``LABEL@K=k`` (e.g.
    ``rvs-mc:K=8@K=1``: trained at K = 8, rendered at K = 1)."""
    rows = []
    for spec in specs:
        trainer = trainers[spec.label]
        meter = runner.EvalMeter(trainer.pipeline.model)
        dial = hasattr(trainer.pipeline.model, "set_eval_num_radiance_samples")
        for k in (ks if dial and ks else (None,)):
            label = spec.label if k is None else f"{spec.label}@K={k}"
            rows.append(Entry(label, trainer, meter, k))
    return rows


def summarize(renders: Dict[str, List[Dict[str, object]]]) -> List[Dict[str, object]]:
    """Per entry: PSNR, the median rays/s over turns and the per-turn ratio to the first entry's (median, range),
    points per ray, and the median time per ray of each phase."""
    reference = next(iter(renders.values()))
    rows = []
    for label, turns in renders.items():
        ratio, ratio_range = common.turn_ratios(
            [turn["render_rays_per_sec"] for turn in turns], [first["render_rays_per_sec"] for first in reference]
        )
        last = turns[-1]
        rows.append({
            "label": label,
            "psnr": last["metrics"]["psnr"],
            "rays_per_sec": statistics.median(turn["render_rays_per_sec"] for turn in turns),
            "speed_ratio": ratio,
            "speed_ratio_range": ratio_range,
            "field_evals_per_ray": last["field_evals_per_ray"],
            "us_per_ray": {phase: statistics.median(turn["render_us_per_ray"][phase] for turn in turns) for phase in PHASES},
        })
    return rows


def markdown(record: Dict[str, object]) -> str:
    """The table with its caption."""
    config, rows = record["config"], record["rows"]
    setup = (
        f"Scene {config['scene']} ({record['resolution']}×{record['resolution']} px, {record['num_test']} held-out views), "
        f"preset {config['preset']}, {config['train_steps']} training steps of {record['rays_per_batch']} rays per "
        f"method (seed {config['seed']}), then {config['turns']} turns in which every entry renders every held-out "
        "view. Rays/s: median over turns; × first: median (lowest–highest) of the per-turn ratios; µs per ray by "
        "phase: density levels (proposal networks), sampling (the rest of the sampler), radiance field, other."
    )
    first = rows[0]["label"]
    lines = [
        reports.caption(record["date"], record["hardware"], record["command"], setup),
        f"| entry | PSNR | rays/s | × {first} | proposal evals/ray | radiance evals/ray | density µs | sampling µs "
        "| radiance µs | other µs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        low, high = row["speed_ratio_range"]
        evals, phases = row["field_evals_per_ray"], row["us_per_ray"]
        lines.append(
            f"| {row['label']} | {row['psnr']:.2f} | {row['rays_per_sec']:,.0f} | {row['speed_ratio']:.2f} "
            f"({low:.2f}–{high:.2f}) | {evals['proposal']:.0f} | {evals['radiance']:.0f} | "
            + " | ".join(f"{phases[phase]:.0f}" for phase in PHASES) + " |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: List[Dict[str, object]], path: Path, title: str) -> None:
    """PSNR against render rays/s: each K of a dial as a line, every other entry as a point."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    dials: Dict[str, List[Tuple[float, float, str]]] = {}
    points = []
    for row in rows:
        method, at, k = row["label"].partition("@K=")
        if at:
            dials.setdefault(method, []).append((row["rays_per_sec"], row["psnr"], k))
        else:
            points.append(row)
    for i, row in enumerate(points):
        axes.scatter(row["rays_per_sec"], row["psnr"], label=row["label"], color=f"C{i}", zorder=3)
    for i, (method, dial) in enumerate(dials.items(), start=len(points)):
        speeds, psnrs, ks = zip(*dial)
        axes.plot(speeds, psnrs, marker="o", color=f"C{i}", label=f"{method}, K = {', '.join(ks)}")
        for speed, psnr, k in dial:
            axes.annotate(f"K={k}", (speed, psnr), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes.set_xscale("log")
    axes.set_xlabel("render rays/s (held-out views)")
    axes.set_ylabel("held-out PSNR (dB)")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.savefig(path, dpi=150)


def run_render(config: RenderConfig, command: str) -> Dict[str, object]:
    """Trains every method on the scene, renders the entries in turns, writes and returns the record."""
    common.refuse_to_overwrite(config.output, REPORT, config.overwrite, PLOT)
    specs = common.parse_methods(config.methods)
    if config.train_steps < 0:
        raise SystemExit(f"{common.COMMAND}: --train-steps must be at least 0 (got {config.train_steps})")
    common.check_positive(turns=config.turns)
    if any(k < 1 for k in config.k):
        raise SystemExit(f"{common.COMMAND}: every --k must be at least 1 (got {' '.join(map(str, config.k))})")
    preset = common.BENCH_PRESETS[config.preset]
    configs = common.method_configs(specs, preset)
    data = common.make_scene(config.output, config.scene, preset, config.resolution)
    with common.trainers_side_by_side(configs, data, config.seed) as trainers:
        table = entries(specs, trainers, config.k)
        if config.k and all(entry.k is None for entry in table):
            raise SystemExit(f"{common.COMMAND}: --k needs an rvs-mc method among --methods")
        for trainer in trainers.values():
            for step in range(config.train_steps):
                runner.train_step(trainer, step)
        renders: Dict[str, List[Dict[str, object]]] = {entry.label: [] for entry in table}
        for _ in range(config.turns):
            for entry in table:
                renders[entry.label].append(entry.render())
    record = common.record(
        command, config, resolution=config.resolution or preset.resolution, num_test=preset.num_test,
        rays_per_batch=next(iter(configs.values())).pipeline.datamanager.train_num_rays_per_batch,
        renders=renders, rows=summarize(renders),
    )
    common.write_report(config.output, REPORT, record, markdown(record))
    title = f"rvs-bench render, {config.scene}, preset {config.preset}, {config.train_steps} steps"
    plot(record["rows"], config.output / PLOT, title)
    CONSOLE.print(markdown(record), markup=False, highlight=False, soft_wrap=True)
    return record
