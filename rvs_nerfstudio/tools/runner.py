"""In-process training with per-phase timing, for benchmarks and learning tests.

Drives nerfstudio's own ``Trainer`` (its ``train_iteration`` and training callbacks), so the numbers are
those of ``ns-train``, and adds wall-clock timers around the proposal sampler, the radiance field and
the backward pass. Works for any nerfacto-style model (``proposal_sampler`` and ``field`` attributes).
Each evaluation also counts the points at which the proposal networks and the radiance field were evaluated
per rendered ray and times the rendering alone, and each run records its peak memory.

Runs are repeatable: nerfstudio's ``ParallelDataManager`` draws the training rays in a spawned worker process,
which does not inherit the trainer's seed, so the runner seeds that worker too (and ends it after the run).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import random
import resource
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional
from unittest import mock

import numpy as np
import torch

from nerfstudio.data.datamanagers import parallel_datamanager
from nerfstudio.engine.callbacks import TrainingCallbackLocation
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils import writer
from rvs_nerfstudio.engine.compat import default_device_type, flush_denormals, optional_lpips
from rvs_nerfstudio.tools import presets


@dataclass
class PhaseTimes:
    """Accumulated seconds per training phase."""

    proposal_forward: float = 0.0
    field_forward: float = 0.0
    field_backward: float = 0.0
    """Backward until the gradient reaches the radiance field's sample positions (all of it if detached)."""
    proposal_backward: float = 0.0
    """Backward from the sample positions into the proposal networks (RVS only)."""
    step: float = 0.0
    """Whole training steps, data loading and optimizer included."""


@dataclass
class EvalCost:
    """What one evaluation of the held-out images cost."""

    field_evals_per_ray: Dict[str, float] = field(default_factory=dict)
    """Points per rendered ray at which the proposal networks (``"proposal"``, all levels together) and the
    radiance field (``"radiance"``) were evaluated: counted, not taken from the config."""
    render_rays_per_sec: float = 0.0
    """Rays rendered per second of image rendering alone (nerfstudio's ``num_rays_per_sec`` adds the metrics)."""
    render_us_per_ray: Dict[str, float] = field(default_factory=dict)
    """Render time per ray in microseconds by phase: ``"density"`` (the proposal networks, every level),
    ``"sampling"`` (the rest of the sampler: splines or histograms, inverse CDFs), ``"radiance"`` (the radiance
    field) and ``"other"`` (renderers, chunking). They add up to the time per rendered ray. On a GPU each timed call
    waits for the device, which adds a little to the render time."""


@dataclass
class EvalPoint:
    """Held-out metrics at one point of training."""

    step: int
    train_seconds: float
    metrics: Dict[str, float]
    cost: EvalCost = field(default_factory=EvalCost)


@dataclass
class PeakMemory:
    """The peak memory of a run, and what was measured."""

    bytes: int = 0
    kind: str = ""
    """``torch.cuda.max_memory_allocated``, or the main process's peak resident set size (RSS) on a CPU."""


@dataclass
class RunResult:
    method: str
    steps: int
    times: PhaseTimes
    evals: List[EvalPoint] = field(default_factory=list)
    peak_memory: PeakMemory = field(default_factory=PeakMemory)
    """Over the whole run: setup, training and evaluations."""
    probes: Dict[str, float] = field(default_factory=dict)
    """What ``train``'s ``probe`` measured on the trained model."""

    @property
    def seconds_per_step(self) -> float:
        return self.times.step / self.steps


class _PhaseTimer:
    """Wraps a model's sampler and field ``forward`` to time forward and backward phases."""

    def __init__(self, model: torch.nn.Module, times: PhaseTimes) -> None:
        self.times = times
        self.enabled = False
        self.positions_grad_time: Optional[float] = None
        model.proposal_sampler.forward = self._timed_sampler(model.proposal_sampler.forward)
        model.field.forward = self._timed(model.field.forward, "field_forward")

    def _timed(self, forward: Callable, phase: str) -> Callable:
        def timed(*args, **kwargs):
            start = time.perf_counter()
            result = forward(*args, **kwargs)
            if self.enabled:
                setattr(self.times, phase, getattr(self.times, phase) + time.perf_counter() - start)
            return result

        return timed

    def _timed_sampler(self, forward: Callable) -> Callable:
        timed_forward = self._timed(forward, "proposal_forward")

        def timed(*args, **kwargs):
            ray_samples, weights_list, ray_samples_list = timed_forward(*args, **kwargs)
            starts = ray_samples.frustums.starts
            if torch.is_grad_enabled() and starts.requires_grad:
                starts.register_hook(self._mark_positions_grad)
            return ray_samples, weights_list, ray_samples_list

        return timed

    def _mark_positions_grad(self, grad: torch.Tensor) -> None:
        self.positions_grad_time = time.perf_counter()

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, split at the moment the sample positions receive their gradient."""
        self.positions_grad_time = None
        start = time.perf_counter()
        loss.backward()
        end = time.perf_counter()
        split = self.positions_grad_time or end
        self.times.field_backward += split - start
        self.times.proposal_backward += end - split


class EvalMeter:
    """Wraps a model's proposal networks, sampler, radiance field and rendering to count points per ray and to time
    image renders by phase."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.counts: Optional[Dict[str, float]] = None
        self.seconds: Dict[str, float] = {}
        proposal_networks = getattr(model, "proposal_networks", [])
        for network in {id(network): network for network in proposal_networks}.values():
            network.get_density = self._metered(network.get_density, "proposal")  # what density_fn calls
        model.proposal_sampler.forward = self._metered(model.proposal_sampler.forward, "sampler")
        model.field.forward = self._metered(model.field.forward, "radiance")
        model.get_outputs = self._metered(model.get_outputs, "rays")
        model.get_outputs_for_camera_ray_bundle = self._metered(model.get_outputs_for_camera_ray_bundle, "rendered_rays")

    def _metered(self, function: Callable, key: str) -> Callable:
        """``function``, counting the points (or rays) of its first argument and timing its calls under ``key``."""

        def metered(*args, **kwargs):
            if self.counts is None:
                return function(*args, **kwargs)
            samples = args[0] if args else next(iter(kwargs.values()))  # RaySamples or RayBundle
            start = _synchronized_clock(samples)
            result = function(*args, **kwargs)
            self.seconds[key] += _synchronized_clock(samples) - start
            self.counts[key] += samples.shape.numel()
            return result

        return metered

    @contextlib.contextmanager
    def measure(self) -> Iterator[EvalCost]:
        """Measures while inside; the yielded ``EvalCost`` is filled in on exit."""
        cost = EvalCost()
        keys = ("rays", "proposal", "sampler", "radiance", "rendered_rays")
        self.counts, self.seconds = dict.fromkeys(keys, 0.0), dict.fromkeys(keys, 0.0)
        try:
            yield cost
        finally:
            counts, seconds, self.counts = self.counts, self.seconds, None
        rays, rendered_rays = max(counts["rays"], 1), max(counts["rendered_rays"], 1)
        cost.field_evals_per_ray = {key: counts[key] / rays for key in ("proposal", "radiance")}
        cost.render_rays_per_sec = counts["rendered_rays"] / max(seconds["rendered_rays"], 1e-9)
        if counts["rendered_rays"]:
            phases = {
                "density": seconds["proposal"],
                "sampling": seconds["sampler"] - seconds["proposal"],
                "radiance": seconds["radiance"],
                "other": seconds["rendered_rays"] - seconds["sampler"] - seconds["radiance"],
            }
            cost.render_us_per_ray = {phase: 1e6 * value / rendered_rays for phase, value in phases.items()}


def _synchronized_clock(samples: Any) -> float:
    """``time.perf_counter()`` after the work queued on the device of ``samples`` (a RayBundle or RaySamples)."""
    origins = samples.origins if hasattr(samples, "origins") else samples.frustums.origins
    if origins.is_cuda:
        torch.cuda.synchronize(origins.device)
    return time.perf_counter()


@contextlib.contextmanager
def measure_peak_memory(device_type: str) -> Iterator[PeakMemory]:
    """Measures the peak memory of the enclosed code: CUDA allocations on a GPU, else the process's peak RSS.

    On Linux the RSS peak is reset on entry (``/proc/self/clear_refs``), so it is the peak of the enclosed
    code; elsewhere it is the process's peak since it started (``resource.getrusage``).
    """
    peak = PeakMemory()
    if device_type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        yield peak
        peak.bytes, peak.kind = torch.cuda.max_memory_allocated(), "torch.cuda.max_memory_allocated"
        return
    status = Path("/proc/self/status")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak RSS, to the current RSS
    except OSError:
        status = Path("/nonexistent")
    yield peak
    if status.exists():
        (line,) = [line for line in status.read_text().splitlines() if line.startswith("VmHWM:")]
        peak.bytes, peak.kind = int(line.split()[1]) * 1024, "peak RSS of the main process during the run"
    else:
        peak.bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        peak.kind = "peak RSS of the main process since it started"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _SeededDataProcessor(parallel_datamanager.DataProcessor):
    """nerfstudio's training-ray worker process, seeded: a spawned process does not inherit the trainer's seed."""

    def __init__(self, seed: int, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seed = seed

    def run(self) -> None:
        seed_everything(self.seed)
        super().run()


@contextlib.contextmanager
def _seeded_data_workers(seed: int) -> Iterator[None]:
    """``ParallelDataManager``s set up inside start their worker processes from ``seed``, ``seed + 1``, ..."""
    seeds = itertools.count(seed)
    with mock.patch.object(
        parallel_datamanager, "DataProcessor", lambda *args, **kwargs: _SeededDataProcessor(next(seeds), *args, **kwargs)
    ):
        yield


def stop_data_workers(trainer: Trainer) -> None:
    """Ends ``ParallelDataManager``'s worker processes, which would otherwise outlive the run (ns-train exits)."""
    for process in getattr(trainer.pipeline.datamanager, "data_procs", []):
        process.terminate()
        process.join()


def setup_trainer(config: TrainerConfig, data: Path, preset: Optional[str], output_dir: Path, seed: int) -> Trainer:
    """A ready ``Trainer`` for ``config`` on ``data`` with ``preset`` applied (None: as it is), logging only to ``output_dir``."""
    config = copy.deepcopy(config)
    if preset is not None:
        presets.apply(config, preset)
    config.pipeline.datamanager.data = data
    config.output_dir = output_dir
    config.vis = "tensorboard"
    config.machine.seed = seed
    config.machine.device_type = default_device_type()
    config.set_timestamp()
    seed_everything(seed)
    flush_denormals()  # as every rvs-* model does, so that other methods run in the same CPU mode
    # Nerfstudio's event writers are process-wide and only ever appended to; an earlier in-process run's writers
    # would still log into its (possibly deleted) output folder.
    writer.EVENT_WRITERS.clear()
    trainer = config.setup(local_rank=0, world_size=1)
    with optional_lpips(), _seeded_data_workers(seed):
        trainer.setup()
    return trainer


def train(
    config: TrainerConfig,
    data: Path,
    steps: int,
    preset: Optional[str] = "cpu-small",
    eval_every: int = 0,
    seed: int = 42,
    output_dir: Optional[Path] = None,
    on_eval: Callable[[EvalPoint], None] = lambda point: None,
    probe: Callable[[Trainer], Dict[str, float]] = lambda trainer: {},
) -> RunResult:
    """Trains ``steps`` steps, evaluating all held-out images every ``eval_every`` steps (0: only at the ends).

    The first evaluation (step 0) is of the untrained model. Evaluation time is not counted as training time.
    ``preset=None`` uses ``config`` as it is. The same ``seed`` gives the same ray batches and initial weights.
    ``on_eval`` is called with each evaluation as it is made (e.g. to show progress), ``probe`` once on the trained
    model (its numbers go to ``RunResult.probes``).
    """
    result = RunResult(method=config.method_name, steps=steps, times=PhaseTimes())
    with tempfile.TemporaryDirectory() as scratch, measure_peak_memory(default_device_type()) as result.peak_memory:
        trainer = setup_trainer(config, data, preset, output_dir or Path(scratch), seed)
        try:
            _train_and_evaluate(trainer, result, steps, eval_every, on_eval)
            result.probes = probe(trainer)
        finally:
            stop_data_workers(trainer)
    return result


def _train_and_evaluate(
    trainer: Trainer, result: RunResult, steps: int, eval_every: int, on_eval: Callable[[EvalPoint], None]
) -> None:
    timer = _PhaseTimer(trainer.pipeline.model, result.times)
    meter = EvalMeter(trainer.pipeline.model)
    scale = trainer.grad_scaler.scale
    trainer.grad_scaler.scale = lambda loss: _BackwardProxy(scale(loss), timer)  # time the backward pass
    for step in range(steps + 1):
        if step % (eval_every or steps) == 0:
            with meter.measure() as cost:
                metrics = evaluate(trainer)
            result.evals.append(EvalPoint(step, result.times.step, metrics, cost))
            on_eval(result.evals[-1])
        if step == steps:
            break
        start, timer.enabled = time.perf_counter(), True
        train_step(trainer, step)
        result.times.step += time.perf_counter() - start
        timer.enabled = False


def train_step(trainer: Trainer, step: int) -> torch.Tensor:
    """One training step as ``ns-train`` takes it: the callbacks before, the iteration, the callbacks after; returns the
    step's loss."""
    _run_callbacks(trainer, step, TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
    trainer.pipeline.train()
    loss, _, _ = trainer.train_iteration(step)
    _run_callbacks(trainer, step, TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
    return loss


class _BackwardProxy:
    """What ``Trainer.train_iteration`` calls ``.backward()`` on: the loss, timed."""

    def __init__(self, loss: torch.Tensor, timer: _PhaseTimer) -> None:
        self.loss, self.timer = loss, timer

    def backward(self) -> None:
        self.timer.backward(self.loss)


def _run_callbacks(trainer: Trainer, step: int, location: TrainingCallbackLocation) -> None:
    for callback in trainer.callbacks:
        callback.run_callback_at_location(step, location=location)


def evaluate(trainer: Trainer) -> Dict[str, float]:
    """Mean held-out image metrics (PSNR, SSIM, LPIPS where available, rays/s) over all eval images."""
    trainer.pipeline.eval()
    with torch.no_grad():
        metrics = trainer.pipeline.get_average_eval_image_metrics()
    trainer.pipeline.train()
    return {name: float(value) for name, value in metrics.items()}
