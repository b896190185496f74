"""The nerfstudio 1.1.5 traps handled by ``rvs_nerfstudio.engine.compat``: checkpoint learning rates and offline LPIPS."""

from __future__ import annotations

import io
import math
import platform
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.fields.density_fields import HashMLPDensityField
from rvs_nerfstudio.engine.compat import (
    AdamBetasOptimizerConfig,
    PortableExponentialDecaySchedulerConfig,
    UnavailableLPIPS,
    with_fast_hash_lookups,
)
from rvs_nerfstudio.models.rvs_nerfacto import RVSNerfactoModelConfig
from tests.helpers import autograd_node_names, build_model


def _lr_trajectory(scheduler_config, steps=40):
    """Learning rates over ``steps`` steps, and the optimizer + scheduler state after them."""
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-2)
    scheduler = scheduler_config.setup().get_scheduler(optimizer, lr_init=1e-2)
    rates = []
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    return rates, {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}


def _weights_only_roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_portable_scheduler_keeps_nerfstudio_schedule_and_loads_weights_only():
    settings = dict(lr_final=1e-4, max_steps=30, warmup_steps=5)
    numpy_rates, numpy_state = _lr_trajectory(ExponentialDecaySchedulerConfig(**settings))
    rates, state = _lr_trajectory(PortableExponentialDecaySchedulerConfig(**settings))
    np.testing.assert_allclose(rates, numpy_rates, rtol=1e-12)
    assert all(type(rate) is float for rate in rates)
    with pytest.raises(Exception, match="weights_only"):  # the trap itself, with nerfstudio's scheduler
        _weights_only_roundtrip(numpy_state)
    assert _weights_only_roundtrip(state)["optimizer"]["param_groups"][0]["lr"] == rates[-1]


@pytest.mark.parametrize("fused", [None, True])
def test_adam_betas_reach_the_optimizer_and_its_state_loads_weights_only(fused):
    """Three steps of the configured optimizer, looped or fused, equal a numpy Adam with the same betas (and differ from
    torch's default betas), and its state round-trips under weights_only."""
    gradients = np.array([[0.5, -1.0], [2.0, 0.1], [-0.3, 0.7]])
    lr, eps, betas = 1e-2, 1e-15, (0.8, 0.9)
    parameter = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    optimizer = AdamBetasOptimizerConfig(lr=lr, eps=eps, betas=betas, fused=fused).setup([parameter])
    assert optimizer.defaults["fused"] is fused
    m = v = x = np.zeros(2)
    for step, gradient in enumerate(gradients, start=1):
        parameter.grad = torch.from_numpy(gradient)
        optimizer.step()
        m = betas[0] * m + (1 - betas[0]) * gradient
        v = betas[1] * v + (1 - betas[1]) * gradient**2
        x = x - lr * (m / (1 - betas[0] ** step)) / (np.sqrt(v / (1 - betas[1] ** step)) + eps)
    np.testing.assert_allclose(parameter.detach().numpy(), x, rtol=1e-10)
    default = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    default_optimizer = AdamBetasOptimizerConfig(lr=lr, eps=eps).setup([default])
    for gradient in gradients:
        default.grad = torch.from_numpy(gradient)
        default_optimizer.step()
    assert np.abs(default.detach().numpy() - x).max() > 1e-4
    assert tuple(_weights_only_roundtrip(optimizer.state_dict())["param_groups"][0]["betas"]) == betas


def _image_metrics(model):
    """Metrics of ``get_image_metrics_and_images`` on a random 64x64 rendering."""
    generator = torch.Generator().manual_seed(0)
    outputs = {name: torch.rand(64, 64, 1, generator=generator) for name in ("accumulation", "depth")}
    outputs.update({f"prop_depth_{i}": torch.rand(64, 64, 1, generator=generator) for i in range(2)})
    outputs["rgb"] = torch.rand(64, 64, 3, generator=generator)
    metrics, _ = model.get_image_metrics_and_images(outputs, {"image": torch.rand(64, 64, 3, generator=generator)})
    return metrics


def test_offline_lpips_is_reported_unavailable_once(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # any download fails at once
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = build_model(RVSNerfactoModelConfig)
    assert len([w for w in caught if "LPIPS is unavailable" in str(w.message)]) == 1
    assert isinstance(model.lpips, UnavailableLPIPS)
    metrics = _image_metrics(model)
    assert "lpips" not in metrics and math.isfinite(metrics["psnr"])


def test_lpips_is_reported_when_weights_are_available(monkeypatch, tmp_path):
    """With AlexNet weights in the torch hub cache (random ones here: no network), LPIPS is computed as usual."""
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(torchvision.models.alexnet().state_dict(), checkpoints / "alexnet-owt-7be5be79.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    model = build_model(RVSNerfactoModelConfig)
    assert not isinstance(model.lpips, UnavailableLPIPS)
    metrics = _image_metrics(model)
    assert math.isfinite(metrics["lpips"]) and metrics["lpips"] > 0


def test_rvs_models_make_the_cpu_flush_subnormal_floats_to_zero():
    """In a fresh process: a subnormal product survives before an rvs model is built and is zero after."""
    script = (
        f"import sys, torch; sys.path.insert(0, {str(Path(__file__).parents[2])!r}); from tests.helpers import build_model; "
        "from rvs_nerfstudio.models.rvs_mc import RVSMonteCarloModelConfig; "
        "product = lambda: (torch.tensor([1e-30]) * torch.tensor([1e-10])).item(); "
        "before = product(); build_model(RVSMonteCarloModelConfig); print(before, product())"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    before, after = map(float, result.stdout.split()[-2:])
    assert before == pytest.approx(1e-40, rel=1e-2)  # representable, so the flag was really off before
    if platform.machine() in ("x86_64", "AMD64", "aarch64", "arm64"):  # CPUs that have a flush-to-zero mode
        assert after == 0.0


def density_and_gradients(density_fn, network, positions, weights):
    """``density_fn`` at ``positions`` [n, 3], the gradients of ``sum(weights * density)`` with respect to the
    positions and to each parameter of ``network``, and the backward functions of the density's graph."""
    network.zero_grad()
    positions = positions.clone().requires_grad_()
    density = density_fn(positions)
    (weights * density).sum().backward()
    parameter_grads = [p.grad.clone() for p in network.parameters()]
    return density.detach(), positions.grad, parameter_grads, autograd_node_names(density)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_hash_lookups_give_nerfstudios_values_and_gradients(dtype):
    """A proposal network with a small table (many points per cell and hash collisions, so lookups share rows) gives the
    same densities, position gradients and parameter gradients as with nerfstudio's own lookups, and its graph
    has one fast lookup per corner (8), all adding to one table gradient, and none of advanced indexing's backward."""
    torch.manual_seed(0)
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    network = HashMLPDensityField(aabb, num_levels=4, max_res=32, log2_hashmap_size=8, implementation="torch").to(dtype)
    positions = (torch.rand(2000, 3, dtype=dtype) * 1.6 - 0.8)
    weights = torch.randn(2000, 1, dtype=dtype)
    reference = density_and_gradients(network.density_fn, network, positions, weights)
    fast = density_and_gradients(with_fast_hash_lookups(network.density_fn, network), network, positions, weights)
    torch.testing.assert_close(fast[0], reference[0], rtol=0, atol=0)
    torch.testing.assert_close(fast[1], reference[1])
    for fast_grad, reference_grad in zip(fast[2], reference[2]):
        torch.testing.assert_close(fast_grad, reference_grad)
    table_grad = fast[2][[p is network.encoding.hash_table for p in network.parameters()].index(True)]
    assert (table_grad != 0).float().mean() > 0.5, "the test should reach most rows of the table"
    assert reference[3]["IndexBackward0"] == 8 and "_HashTableLookupBackward" not in reference[3]
    assert fast[3]["_HashTableLookupBackward"] == 8 and "IndexBackward0" not in fast[3]
    assert fast[3]["_TableForLookupsBackward"] == 1, "the eight lookups should add to one table gradient"


def test_fast_hash_lookups_give_the_same_table_gradient_on_each_backward_through_one_graph():
    """With ``retain_graph``, every backward through one pass's graph adds the same table gradient again, as
    nerfstudio's lookups do: the lookups' shared gradient starts from zero on each backward."""
    torch.manual_seed(0)
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    network = HashMLPDensityField(aabb, num_levels=4, max_res=32, log2_hashmap_size=8, implementation="torch")
    positions = torch.rand(500, 3) * 1.6 - 0.8
    table_grads = []
    for density_fn in (network.density_fn, with_fast_hash_lookups(network.density_fn, network)):
        network.zero_grad()
        density = density_fn(positions).sum()
        density.backward(retain_graph=True)
        once = network.encoding.hash_table.grad.clone()
        density.backward()
        table_grads.append((once, network.encoding.hash_table.grad.clone()))
    (reference_once, reference_twice), (fast_once, fast_twice) = table_grads
    assert reference_once.abs().sum() > 0
    torch.testing.assert_close(fast_once, reference_once)
    torch.testing.assert_close(fast_twice, reference_twice)
    torch.testing.assert_close(fast_twice, 2 * fast_once)
