"""In-process training with per-phase timing, for benchmarks and learning tests.

Drives nerfstudio's own ``Trainer`` (its ``train_iteration`` and training callbacks), so the numbers are
those of ``ns-train``, and adds wall-clock timers around the proposal sampler, the radiance field and
the backward pass. Works for any nerfacto-style model (``proposal_sampler`` and ``field`` attributes).
"""

from __future__ import annotations

import copy
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from nerfstudio.engine.callbacks import TrainingCallbackLocation
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from rvs_nerfstudio import presets
from rvs_nerfstudio.compat import default_device_type, optional_lpips


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
class EvalPoint:
    """Held-out metrics at one point of training."""

    step: int
    train_seconds: float
    metrics: Dict[str, float]


@dataclass
class RunResult:
    method: str
    steps: int
    times: PhaseTimes
    evals: List[EvalPoint] = field(default_factory=list)

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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup_trainer(config: TrainerConfig, data: Path, preset: str, output_dir: Path, seed: int) -> Trainer:
    """A ready ``Trainer`` for ``config`` on ``data`` with ``preset`` applied, logging only to ``output_dir``."""
    config = presets.apply(copy.deepcopy(config), preset)
    config.pipeline.datamanager.data = data
    config.output_dir = output_dir
    config.vis = "tensorboard"
    config.machine.seed = seed
    config.machine.device_type = default_device_type()
    config.set_timestamp()
    seed_everything(seed)
    trainer = config.setup(local_rank=0, world_size=1)
    with optional_lpips():
        trainer.setup()
    return trainer


def train(
    config: TrainerConfig,
    data: Path,
    steps: int,
    preset: str = "cpu-small",
    eval_every: int = 0,
    seed: int = 42,
    output_dir: Optional[Path] = None,
) -> RunResult:
    """Trains ``steps`` steps, evaluating all held-out images every ``eval_every`` steps (0: only at the ends).

    The first evaluation (step 0) is of the untrained model. Evaluation time is not counted as training time.
    """
    with tempfile.TemporaryDirectory() as scratch:
        trainer = setup_trainer(config, data, preset, output_dir or Path(scratch), seed)
        result = RunResult(method=config.method_name, steps=steps, times=PhaseTimes())
        timer = _PhaseTimer(trainer.pipeline.model, result.times)
        scale = trainer.grad_scaler.scale
        trainer.grad_scaler.scale = lambda loss: _BackwardProxy(scale(loss), timer)  # time the backward pass
        for step in range(steps + 1):
            if step % (eval_every or steps) == 0:
                result.evals.append(EvalPoint(step, result.times.step, evaluate(trainer)))
            if step == steps:
                break
            start, timer.enabled = time.perf_counter(), True
            _run_callbacks(trainer, step, TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
            trainer.pipeline.train()
            trainer.train_iteration(step)
            _run_callbacks(trainer, step, TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
            result.times.step += time.perf_counter() - start
            timer.enabled = False
    return result


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
