"""The in-process runner's measurements: field evaluations per ray, render throughput, peak memory."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from rvs_nerfstudio.models.rvs_mc import RVSMonteCarloModelConfig
from rvs_nerfstudio.models.rvs_nerfacto import RVSNerfactoModelConfig
from rvs_nerfstudio.tools.runner import _EvalMeter, measure_peak_memory
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
    meter = _EvalMeter(model)
    with torch.no_grad():
        model(ray_bundle)  # not counted
        with meter.measure() as cost:
            model(ray_bundle[:40])
            model(ray_bundle[40:])
    assert cost.field_evals_per_ray == expected


def test_render_throughput_times_the_image_renders_alone(ray_bundle):
    model = build_model(RVSNerfactoModelConfig).eval()
    meter = _EvalMeter(model)
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


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="per-run RSS peaks need Linux's clear_refs")
def test_peak_memory_is_that_of_the_enclosed_code():
    with measure_peak_memory("cpu") as big:
        block = torch.ones(64 * 2**20)  # 256 MiB, touched
        del block
    with measure_peak_memory("cpu") as small:
        pass
    assert "during the run" in big.kind
    assert big.bytes - small.bytes > 200 * 2**20
