"""The in-process runner's measurements: field evaluations per ray, render throughput, peak memory."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rvs_nerfstudio.models.rvs_mc import RVSMonteCarloModelConfig
from rvs_nerfstudio.models.rvs_nerfacto import RVSNerfactoModelConfig
from rvs_nerfstudio.tools import runner
from rvs_nerfstudio.tools.runner import EvalMeter
from tests.helpers import OfflineNerfactoConfig, build_model


@pytest.mark.parametrize(
    "config_class, overrides, expected",
    [
        (OfflineNerfactoConfig, {}, {"proposal": 32 + 16, "radiance": 8}),
        (RVSNerfactoModelConfig, {}, {"proposal": 32 + 16, "radiance": 8}),
        (RVSMonteCarloModelConfig, {"num_radiance_samples": 3, "eval_num_radiance_samples": 5}, {"proposal": 32 + 16, "radiance": 5}),
    ],
)
def test_field_evaluations_per_ray_are_counted(ray_bundle, config_class, overrides, expected):
    model = build_model(config_class, **overrides).eval()
    meter = EvalMeter(model)
    with torch.no_grad():
        model(ray_bundle)  # not counted
        with meter.measure() as cost:
            model(ray_bundle[:40])
            model(ray_bundle[40:])
    assert cost.field_evals_per_ray == expected


def test_render_throughput_times_the_image_renders_alone(ray_bundle):
    model = build_model(RVSNerfactoModelConfig).eval()
    meter = EvalMeter(model)
    image = ray_bundle.reshape((8, 8))
    model.get_outputs_for_camera_ray_bundle(image)  # not measured
    with meter.measure() as cost:
        start = time.perf_counter()
        model.get_outputs_for_camera_ray_bundle(image)
        model.get_outputs_for_camera_ray_bundle(image)
        rendering = time.perf_counter() - start
        time.sleep(0.5)  # e.g. metrics: not rendering
    assert cost.field_evals_per_ray["radiance"] == 8
    assert 128 / rendering <= cost.render_rays_per_sec < 1.5 * 128 / rendering


PEAK_MEMORY_SCRIPT = """
import torch
from rvs_nerfstudio.tools.runner import measure_peak_memory
with measure_peak_memory("cpu") as big:
    block = torch.ones(64 * 2**20)  # 256 MiB, touched
    del block
with measure_peak_memory("cpu") as small:
    pass
print(big.kind, big.bytes - small.bytes, sep=";")
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="per-run RSS peaks need Linux's clear_refs")
def test_peak_memory_is_that_of_the_enclosed_code():
    """In a fresh process: after the earlier tests of a suite this one's resident memory can already be far above the
    block, and how much of it a new allocation adds then depends on them."""
    result = subprocess.run([sys.executable, "-c", PEAK_MEMORY_SCRIPT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    kind, difference = result.stdout.strip().splitlines()[-1].split(";")
    assert "during the run" in kind
    assert int(difference) > 200 * 2**20


class FakeClock:
    """A ``time`` module for the runner whose clock moves only when a wrapped call "takes" time."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def slowed(self, function, seconds: float, calls: list):
        """``function``, taking ``seconds`` of this clock per call; each call appends to ``calls``."""

        def slow(*args, **kwargs):
            calls.append(None)
            self.now += seconds
            return function(*args, **kwargs)

        return slow


@pytest.mark.parametrize("config_class", [OfflineNerfactoConfig, RVSMonteCarloModelConfig])
def test_render_time_is_split_by_phase(ray_bundle, config_class, monkeypatch):
    """On a clock that only the proposal networks (1 s a call) and the radiance field (3 s a call) move, each phase
    holds exactly its own calls' time, the rest holds none, and the phases add up to the time per rendered ray."""
    model = build_model(config_class).eval()
    clock, density_calls, radiance_calls = FakeClock(), [], []
    monkeypatch.setattr(runner, "time", clock)
    for network in model.proposal_networks:
        network.get_density = clock.slowed(network.get_density, 1.0, density_calls)
    model.field.forward = clock.slowed(model.field.forward, 3.0, radiance_calls)
    meter = EvalMeter(model)
    with meter.measure() as cost:
        model.get_outputs_for_camera_ray_bundle(ray_bundle.reshape((8, 8)))
    assert len(density_calls) >= model.config.num_proposal_iterations and radiance_calls
    rays = 64
    expected = {"density": 1e6 * len(density_calls) / rays, "sampling": 0.0,
                "radiance": 3e6 * len(radiance_calls) / rays, "other": 0.0}
    assert cost.render_us_per_ray == pytest.approx(expected)
    assert cost.render_rays_per_sec == pytest.approx(rays / (len(density_calls) + 3 * len(radiance_calls)))


def test_train_step_runs_the_callbacks_around_the_iteration_and_returns_its_loss():
    """``train_step`` gives back the loss of nerfstudio's ``train_iteration`` (the trace script logs it), after the
    before-callbacks and before the after-callbacks."""
    calls = []
    trainer = SimpleNamespace(
        callbacks=[SimpleNamespace(run_callback_at_location=lambda step, location: calls.append(location.name))],
        pipeline=SimpleNamespace(train=lambda: calls.append("train")),
        train_iteration=lambda step: (calls.append(f"iteration {step}") or torch.tensor(0.25 * step), {}, {}),
    )
    assert float(runner.train_step(trainer, 6)) == 1.5
    assert calls == ["BEFORE_TRAIN_ITERATION", "train", "iteration 6", "AFTER_TRAIN_ITERATION"]
