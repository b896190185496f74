"""``rvs-bench quality``: nerfacto, rvs-nerfacto and rvs-mc side by side on the project's synthetic scenes.

Every method is trained on every scene with the same data split, seed, ray batches and step count, through
nerfstudio's own ``Trainer`` (:mod:`rvs_nerfstudio.tools.runner`) and its ``VanillaDataManager`` (nerfacto's parallel
one is swapped out, see :func:`~rvs_nerfstudio.tools.bench.common.in_main_process`), then evaluated on all held-out
views. Per
(method, scene) the benchmark reports PSNR, SSIM, LPIPS (where its weights are available), training wall time
and rays/s, render rays/s on the held-out views (rendering alone; nerfstudio's ``num_rays_per_sec``, which adds
the per-image metrics, stays in the evaluation records), the proposal-network and radiance-field evaluations per
rendered ray (counted during the final evaluation), peak memory (CUDA allocations on a GPU, the main
process's peak RSS on a CPU), and where the trained model puts its radiance samples relative to its own field
(:mod:`rvs_nerfstudio.tools.bench.placement`).

Scenes come from :mod:`rvs_nerfstudio.data.synth` (seed 0), generated on the fly into the output folder: ``object``
(360°, white background), ``forward`` (forward-facing, content at several depths) and ``unbounded`` (360°, content
from about 1 to 80 away under a photo sky). ``--seeds`` vary training
only (initial weights, ray batches, jitter); several seeds give the mean ± standard deviation.

Writes ``quality.json`` (every number, date, hardware, command), ``quality.md`` (the tables for the README) and
``psnr_vs_speed.png`` (held-out PSNR against render rays/s).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from nerfstudio.utils.rich_utils import CONSOLE
from rvs_nerfstudio.data.synth import Layout, SceneName
from rvs_nerfstudio.tools import reports, runner
from rvs_nerfstudio.tools.bench import common, placement
from rvs_nerfstudio.tools.bench.common import MethodSpec, PresetName
from rvs_nerfstudio.tools.runner import RunResult

REPORT = "quality"
PLOT = "psnr_vs_speed.png"


@dataclass
class QualityConfig:
    """Train nerfacto, rvs-nerfacto and rvs-mc side by side on synthetic scenes; tabulate quality and cost."""

    preset: PresetName = "cpu-small"
    """cpu-small: shrunk models on 64-pixel scenes (3 methods x 3 scenes in about 30 min on 2 cores); cpu-long: the same
    models, 3000 steps on 96-pixel scenes (about 25 min per run on one thread); cpu-full: nerfacto's
    full model sizes, 512-ray steps on 32-pixel scenes, 1000 steps; gpu: nerfacto's full settings, 30000 steps."""
    methods: Tuple[str, ...] = ("nerfacto", "rvs-nerfacto", "rvs-mc:K=8")
    """Registered methods, each optionally with model options: 'rvs-mc:K=8' (K: num_radiance_samples), 'name:field=value,field=value'
    (a tuple as 128/64); a dotted field is a path from the trainer config ('optimizers.proposal_networks.optimizer.lr=1e-3')."""
    scenes: Tuple[SceneName, ...] = ("object", "forward", "unbounded")
    """Synthetic scenes, generated deterministically into OUTPUT/scenes."""
    steps: Optional[int] = None
    """Training steps per run (default: the preset's: 600 for cpu-small, 3000 for cpu-long, 1000 for cpu-full, 30000 for gpu)."""
    seeds: Tuple[int, ...] = (0,)
    """Training seeds (the scenes stay fixed); several report the mean ± standard deviation over seeds."""
    resolution: Optional[int] = None
    """Scene image width and height in pixels (default: the preset's: 64 for cpu-small, 96 for cpu-long, 32 for cpu-full, 256 for gpu)."""
    layout: Layout = "nerfstudio"
    """Layout the scenes are written in; nerfacto reads it with nerfstudio's parser for it (blender-data), our
    methods with auto-data."""
    eval_every: int = 0
    """Also evaluate every this many steps (0: only before and after training), for PSNR at equal wall time."""
    threads: Optional[int] = None
    """CPU threads for torch (default: torch's, one per core); 1 is steadier on a machine shared with other jobs."""
    output: Path = Path("outputs/rvs-bench")
    """Folder for quality.json, quality.md, psnr_vs_speed.png and the generated scenes."""
    overwrite: bool = False
    """Replace earlier results in OUTPUT."""


def run_record(
    spec: MethodSpec, scene: str, seed: int, result: RunResult, rays_per_batch: int, wall_seconds: float
) -> Dict[str, Any]:
    """The numbers of one (method, scene, seed) run, from a :class:`rvs_nerfstudio.tools.runner.RunResult`.

    ``wall_seconds`` is the whole run's, setup and evaluations included.
    """
    final = result.evals[-1]
    lpips = final.metrics.get("lpips")
    return {
        "method": spec.label,
        "scene": scene,
        "seed": seed,
        "psnr": final.metrics["psnr"],
        "ssim": final.metrics["ssim"],
        "lpips": lpips if lpips is not None and math.isfinite(lpips) else None,  # NaN: LPIPS weights unavailable
        "train_seconds": result.times.step,
        "train_rays_per_sec": result.steps * rays_per_batch / result.times.step,
        "render_rays_per_sec": final.cost.render_rays_per_sec,
        "proposal_evals_per_ray": final.cost.field_evals_per_ray["proposal"],
        "radiance_evals_per_ray": final.cost.field_evals_per_ray["radiance"],
        "peak_memory_mib": result.peak_memory.bytes / 2**20,
        "peak_memory_kind": result.peak_memory.kind,
        "seconds_per_step": result.seconds_per_step,
        "wall_seconds": wall_seconds,
        "phase_seconds": asdict(result.times),
        **result.probes,
        "evals": [asdict(point) for point in result.evals],
    }


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    digits: int


COLUMNS = (
    Column("psnr", "PSNR ↑", 2),
    Column("ssim", "SSIM ↑", 3),
    Column("lpips", "LPIPS ↓", 3),
    Column("train_seconds", "train s", 0),
    Column("train_rays_per_sec", "train rays/s", 0),
    Column("render_rays_per_sec", "render rays/s", 0),
    Column("proposal_evals_per_ray", "proposal evals/ray", 1),
    Column("radiance_evals_per_ray", "radiance evals/ray", 1),
    Column("peak_memory_mib", "peak memory MiB", 0),
    Column("edges_inside", "samples in field's 10–90 %", 2),
    Column("edges_in_front", "samples in front", 2),
)
"""The table's numeric columns, after method and scene."""


def by_method_and_scene(runs: Sequence[Dict[str, Any]]) -> Dict[Tuple[str, str], List[Dict[str, Any]]]:
    """The runs grouped by (method, scene), in order of first appearance."""
    groups: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["method"], run["scene"]), []).append(run)
    return groups


def first_method_runs(results: Dict[str, Any]) -> Dict[Tuple[str, int], Dict[str, Any]]:
    """The first method's runs by (scene, seed): the reference the other methods are compared with."""
    first = results["meta"]["methods"][0]
    return {(run["scene"], run["seed"]): run for run in results["runs"] if run["method"] == first}


def summarize(runs: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per (method, scene), in order of first appearance: each column's mean and sample std over seeds.

    ``std`` is None with a single seed; a column that no run reports (LPIPS offline) has mean None.
    """
    summary = []
    for (method, scene), group in by_method_and_scene(runs).items():
        row: Dict[str, Any] = {"method": method, "scene": scene, "seeds": [run["seed"] for run in group]}
        for column in COLUMNS:
            values = [run[column.key] for run in group if run.get(column.key) is not None]
            row[column.key] = {
                "mean": statistics.fmean(values) if values else None,
                "std": statistics.stdev(values) if len(values) > 1 else None,
            }
        summary.append(row)
    return summary


def _format(stat: Dict[str, Optional[float]], digits: int) -> str:
    if stat["mean"] is None:
        return "–"
    text = f"{stat['mean']:,.{digits}f}"
    return text if stat["std"] is None else f"{text} ± {stat['std']:,.{digits}f}"


def markdown_table(results: Dict[str, Any]) -> str:
    """The README's results table: a caption with date, hardware and command, then one row per (method, scene)."""
    meta = results["meta"]
    seeds = meta["seeds"]
    setup = (
        f"Preset {meta['preset']}: {meta['steps']} steps of {meta['train_rays_per_batch']} rays, "
        f"{meta['resolution']}×{meta['resolution']} px scenes in {meta['layout']} layout "
        f"({meta['num_train']} train / {meta['num_test']} held-out views), "
        f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
        + (" (mean ± std over seeds)" if len(seeds) > 1 else "")
        + f"; peak memory is {meta['peak_memory_kind']}. Samples in field's 10–90 % / in front: the share of the "
        "trained model's radiance-sample bin edges inside / in front of its own field's central termination interval, "
        "on 1024 rays of the first held-out view (rvs_nerfstudio.tools.bench.placement)."
    )
    lines = [
        reports.caption(meta["date"], meta["hardware"], meta["command"], setup),
        "| method | scene | " + " | ".join(column.header for column in COLUMNS) + " |",
        "|---|---|" + "---:|" * len(COLUMNS),
    ]
    for row in results["summary"]:
        cells = [_format(row[column.key], column.digits) for column in COLUMNS]
        lines.append(f"| {row['method']} | {row['scene']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


PHASES = ("proposal_forward", "field_forward", "field_backward", "proposal_backward")
"""Training phases of :class:`rvs_nerfstudio.tools.runner.PhaseTimes`, reported in ms per step."""


def psnr_within(run: Dict[str, Any], seconds: float) -> Optional[float]:
    """Held-out PSNR at the run's last evaluation after at most ``seconds`` of training (None if none was)."""
    points = [point for point in run["evals"] if point["train_seconds"] <= seconds * (1 + 1e-9)]
    return points[-1]["metrics"]["psnr"] if points else None


def cost_rows(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Per (method, scene), averaged over seeds: ms per step and per phase, the step time relative to the first
    method's on the same scene and seed, and PSNR at equal steps and at the first method's training time."""
    reference = first_method_runs(results)
    rows = []
    for (method, scene), group in by_method_and_scene(results["runs"]).items():
        per_step = [{phase: 1e3 * run["phase_seconds"][phase] / results["meta"]["steps"]
                     for phase in (*PHASES, "step")} for run in group]
        references = [reference.get((scene, run["seed"])) for run in group]  # None: no first-method run at that seed
        equal_time = [None if ref is None else psnr_within(run, ref["train_seconds"]) for run, ref in zip(group, references)]
        rows.append({
            "method": method,
            "scene": scene,
            "ms": {key: statistics.fmean(step[key] for step in per_step) for key in (*PHASES, "step")},
            "ratio": statistics.fmean(run["seconds_per_step"] / ref["seconds_per_step"] for run, ref in zip(group, references))
            if None not in references else None,
            "psnr_equal_steps": statistics.fmean(run["psnr"] for run in group),
            "psnr_equal_time": statistics.fmean(equal_time) if None not in equal_time else None,
        })
    return rows


def _table(caption: str, headers: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int) -> str:
    """Markdown: the caption, a blank line, then the table (the first ``text_columns`` left-aligned, the rest right)."""
    lines = [caption, "", "| " + " | ".join(headers) + " |",
             "|" + "---|" * text_columns + "---:|" * (len(headers) - text_columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def cost_table(results: Dict[str, Any]) -> str:
    """Markdown: where the training time goes, and PSNR at equal steps and at equal wall time."""
    first = results["meta"]["methods"][0]
    caption = (
        f"Training cost per step (ms; backward split where the gradient reaches the sample positions) and held-out "
        f"PSNR at equal steps and at equal training time: the last evaluation (every {results['meta']['eval_every']} "
        f"steps) within {first}'s training time."
    )
    headers = ["method", "scene", "ms/step", f"× {first}", "proposal fwd", "field fwd", "field bwd", "proposal bwd",
               "PSNR equal steps", "PSNR equal time"]
    rows = [
        [row["method"], row["scene"], f"{row['ms']['step']:.0f}", "–" if row["ratio"] is None else f"{row['ratio']:.2f}",
         *(f"{row['ms'][phase]:.0f}" for phase in PHASES), f"{row['psnr_equal_steps']:.2f}",
         "–" if row["psnr_equal_time"] is None else f"{row['psnr_equal_time']:.2f}"]
        for row in cost_rows(results)
    ]
    return _table(caption, headers, rows, text_columns=2)


def late_drop(run: Dict[str, Any], steps: int) -> float:
    """The most the run's held-out PSNR fell below its best so far at an evaluation in the second half of training
    (dB; 0 when it never fell)."""
    best, drop = -math.inf, 0.0
    for point in run["evals"]:
        best = max(best, point["metrics"]["psnr"])
        if point["step"] >= steps / 2:
            drop = max(drop, best - point["metrics"]["psnr"])
    return drop


def paired_rows(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Per (method, scene), by seed: held-out PSNR minus the first method's on the same scene and seed, at equal steps
    and at equal training time (None for the first method, and where no evaluation lies within its time), and
    each run's :func:`late_drop`."""
    first, steps = results["meta"]["methods"][0], results["meta"]["steps"]
    reference = first_method_runs(results)
    rows = []
    for (method, scene), group in by_method_and_scene(results["runs"]).items():
        row: Dict[str, Any] = {"method": method, "scene": scene, "seeds": [run["seed"] for run in group],
                               "equal_steps": None, "equal_time": None}
        if method != first:
            references = [reference.get((scene, run["seed"])) for run in group]  # None: no first-method run there
            row["equal_steps"] = [None if ref is None else run["psnr"] - ref["psnr"] for run, ref in zip(group, references)]
            within = [None if ref is None else psnr_within(run, ref["train_seconds"]) for run, ref in zip(group, references)]
            row["equal_time"] = [None if psnr is None else psnr - ref["psnr"] for psnr, ref in zip(within, references)]
        row["late_drop"] = [late_drop(run, steps) for run in group]
        rows.append(row)
    return rows


def _per_seed(values: Optional[Sequence[Optional[float]]]) -> Tuple[str, str]:
    """Signed per-seed values joined by " / ", and their mean ± sample std ("–" where there are none)."""
    if values is None:
        return "–", "–"
    known = [value for value in values if value is not None]
    mean = f"{statistics.fmean(known):+.2f}" if known else "–"
    spread = f" ± {statistics.stdev(known):.2f}" if len(known) > 1 else ""
    return " / ".join("–" if value is None else f"{value:+.2f}" for value in values), mean + spread


def paired_table(results: Dict[str, Any]) -> str:
    """Markdown: per-seed PSNR differences to the first method at equal steps and at equal training time, and the
    late drops."""
    first = results["meta"]["methods"][0]
    caption = (
        f"Held-out PSNR minus {first}'s on the same scene and seed (dB), per seed and mean ± std: at equal steps, and "
        f"at equal training time (the last evaluation within {first}'s training time). Late drop: the most a run's "
        f"PSNR fell below its best so far at evaluations in the second half of training."
    )
    headers = ["method", "scene", "seeds", f"− {first}, equal steps", "mean", f"− {first}, equal time", "mean",
               "late drop per seed", "largest"]
    rows = [
        [row["method"], row["scene"], " ".join(map(str, row["seeds"])), *_per_seed(row["equal_steps"]),
         *_per_seed(row["equal_time"]), " / ".join(f"{drop:.2f}" for drop in row["late_drop"]),
         f"{max(row['late_drop']):.2f}"]
        for row in paired_rows(results)
    ]
    return _table(caption, headers, rows, text_columns=3)


def plot_psnr_vs_speed(results: Dict[str, Any], path: Path) -> None:
    """One point per (method, scene): held-out PSNR against render rays/s (log scale), error bars over seeds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    methods = list(dict.fromkeys(row["method"] for row in results["summary"]))
    scenes = list(dict.fromkeys(row["scene"] for row in results["summary"]))
    markers = "os^Dvx*"
    for row in results["summary"]:
        speed, psnr = row["render_rays_per_sec"], row["psnr"]
        axes.errorbar(
            speed["mean"], psnr["mean"], xerr=speed["std"], yerr=psnr["std"], linestyle="none", capsize=3,
            marker=markers[scenes.index(row["scene"]) % len(markers)], markersize=8,
            color=f"C{methods.index(row['method'])}", label=f"{row['method']} · {row['scene']}",
        )
    axes.set_xscale("log")
    axes.set_xlabel("render rays/s (held-out views)")
    axes.set_ylabel("held-out PSNR (dB)")
    meta = results["meta"]
    axes.set_title(f"rvs-bench {meta['preset']}: {meta['steps']} steps, {meta['hardware']['device']}", fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    figure.savefig(path, dpi=150)


def tables(results: Dict[str, Any]) -> str:
    """quality.md: the results, cost and paired tables."""
    return "\n".join((markdown_table(results), cost_table(results), paired_table(results)))


def write_results(results: Dict[str, Any], output: Path) -> None:
    """``quality.json``, ``quality.md`` (both tables) and ``psnr_vs_speed.png`` in ``output``."""
    common.write_report(output, REPORT, results, tables(results))
    plot_psnr_vs_speed(results, output / PLOT)


def run_quality(config: QualityConfig, command: str) -> Dict[str, Any]:
    """Runs every (seed, scene, method), writes the three output files and returns what quality.json holds."""
    common.refuse_to_overwrite(config.output, REPORT, config.overwrite, PLOT)
    if not config.scenes or not config.seeds:
        raise SystemExit(f"{common.COMMAND}: give at least one scene and one seed")
    specs = common.parse_methods(config.methods)
    preset = common.BENCH_PRESETS[config.preset]
    steps = preset.steps if config.steps is None else config.steps
    common.check_positive(steps=steps, **({} if config.threads is None else {"threads": config.threads}))

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    trainer_configs = {
        label: common.parse_as_users_do(method, config.layout) for label, method in common.method_configs(specs, preset).items()
    }
    # Method options only touch the model, so every method trains on the preset's ray batch.
    rays_per_batch = next(iter(trainer_configs.values())).pipeline.datamanager.train_num_rays_per_batch
    scenes = {
        scene: common.make_scene(config.output, scene, preset, config.resolution, config.layout)
        for scene in dict.fromkeys(config.scenes)
    }
    runs: List[Dict[str, Any]] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=CONSOLE) as progress:
        task = progress.add_task(common.COMMAND, total=len(config.seeds) * len(scenes) * len(specs))
        for seed in config.seeds:
            for scene, data in scenes.items():
                for spec in specs:
                    progress.update(task, description=f"{spec.label} on {scene}, seed {seed}")
                    start = time.perf_counter()
                    result = runner.train(
                        trainer_configs[spec.label], data, steps, preset=None, eval_every=config.eval_every, seed=seed,
                        on_eval=lambda point: progress.console.print(
                            f"  step {point.step}: PSNR {point.metrics['psnr']:.2f} dB", markup=False, highlight=False
                        ),
                        probe=placement.held_out_placement,
                    )
                    run = run_record(spec, scene, seed, result, rays_per_batch, time.perf_counter() - start)
                    runs.append(run)
                    progress.advance(task)
                    progress.console.print(
                        f"{spec.label} on {scene}, seed {seed}: PSNR {run['psnr']:.2f} dB, "
                        f"{run['train_seconds']:.0f} s training ({run['seconds_per_step']:.3f} s/step)"
                    )
    meta = {
        "date": reports.now(),
        "command": command,
        "hardware": reports.hardware(),
        "preset": config.preset,
        "model_preset": preset.model_preset,
        "steps": steps,
        "eval_every": config.eval_every or steps,
        "seeds": list(config.seeds),
        "scenes": list(scenes),
        "methods": [spec.label for spec in specs],
        "train_rays_per_batch": rays_per_batch,
        "resolution": config.resolution or preset.resolution,
        "layout": config.layout,
        "num_train": preset.num_train,
        "num_test": preset.num_test,
        "peak_memory_kind": runs[0]["peak_memory_kind"],
    }
    results = {"meta": meta, "summary": summarize(runs), "runs": runs}
    write_results(results, config.output)
    CONSOLE.print(tables(results), markup=False, highlight=False, soft_wrap=True)
    return results


@dataclass
class MergeConfig:
    """Merge the quality.json of several rvs-bench quality runs made with the same preset (e.g. one process per method,
    run side by side) into one report with every table, the paired one included."""

    inputs: Tuple[Path, ...] = ()
    """quality.json files or the folders holding them; the first one's first method is the paired tables' reference."""
    output: Path = Path("outputs/rvs-bench")
    """Folder for the merged quality.json, quality.md and psnr_vs_speed.png."""
    overwrite: bool = False
    """Replace earlier results in OUTPUT."""


MERGED_SETTINGS = (
    "preset", "steps", "eval_every", "train_rays_per_batch", "resolution", "layout", "num_train", "num_test"
)
"""What every merged run must share."""


def merge_results(records: Sequence[Dict[str, Any]], command: str) -> Dict[str, Any]:
    """One report from several ``quality.json`` records: their runs in order, methods, scenes and seeds in order of
    first appearance, and the commands that made them; a one-line ``SystemExit`` if their settings differ."""
    first = records[0]["meta"]
    for record in records[1:]:
        differing = [key for key in MERGED_SETTINGS if record["meta"][key] != first[key]]
        if differing:
            raise SystemExit(f"{common.COMMAND}: cannot merge runs with different {', '.join(differing)}")
    runs = [run for record in records for run in record["runs"]]
    meta = {
        **first,
        "date": reports.now(),
        "command": " ; ".join([*(record["meta"]["command"] for record in records), command]),
        "methods": list(dict.fromkeys(run["method"] for run in runs)),
        "scenes": list(dict.fromkeys(run["scene"] for run in runs)),
        "seeds": sorted({run["seed"] for run in runs}),
        "merged_from": [record["meta"]["date"] for record in records],
    }
    return {"meta": meta, "summary": summarize(runs), "runs": runs}


def run_merge(config: MergeConfig, command: str) -> Dict[str, Any]:
    """Reads the inputs, writes the merged report into ``config.output`` and prints its tables."""
    common.refuse_to_overwrite(config.output, REPORT, config.overwrite, PLOT)
    files = [path / f"{REPORT}.json" if path.is_dir() else path for path in config.inputs]
    missing = [str(path) for path in files if not path.is_file()]
    if len(files) < 2 or missing:
        raise SystemExit(
            f"{common.COMMAND}: give at least two quality.json files or folders; not found: {', '.join(missing) or '-'}"
        )
    results = merge_results([json.loads(path.read_text(encoding="utf-8")) for path in files], command)
    write_results(results, config.output)
    CONSOLE.print(tables(results), markup=False, highlight=False, soft_wrap=True)
    return results
