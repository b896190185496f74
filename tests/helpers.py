"""Helpers shared by the tests: tiny models, one training pass, and the real ``ns-*`` / ``rvs-*`` commands run
offline in subprocesses. Fixtures live in ``conftest.py``."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Type

import numpy as np
import torch

from nerfstudio.cameras.rays import RayBundle, RaySamples
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.models.nerfacto import NerfactoModel, NerfactoModelConfig
from rvs_nerfstudio.engine.compat import OptionalLPIPSMixin
from rvs_nerfstudio.tools import presets

# --- Tiny models ---------------------------------------------------------------------------------------------

TINY_FIELD = dict(
    implementation="torch",
    num_levels=4,
    log2_hashmap_size=12,
    max_res=128,
    hidden_dim=16,
    hidden_dim_color=16,
    appearance_embed_dim=4,
    num_proposal_samples_per_ray=(32, 16),
    num_nerf_samples_per_ray=8,
    proposal_net_args_list=[
        {"hidden_dim": 16, "log2_hashmap_size": 12, "num_levels": 4, "max_res": 64, "use_linear": False},
        {"hidden_dim": 16, "log2_hashmap_size": 12, "num_levels": 4, "max_res": 128, "use_linear": False},
    ],
)
"""Model-config overrides that keep nerfacto-style models small enough for unit tests."""


class OfflineNerfacto(OptionalLPIPSMixin, NerfactoModel):
    """Stock nerfacto, constructible offline: the reference that RVS models are compared with."""


@dataclass
class OfflineNerfactoConfig(NerfactoModelConfig):
    _target: Type = field(default_factory=lambda: OfflineNerfacto)


def build_model(config_class, num_cameras: int = 4, **overrides):
    """A model of ``config_class`` with :data:`TINY_FIELD` settings, in a [-1, 1]^3 scene box."""
    torch.manual_seed(0)
    config = config_class(**{**TINY_FIELD, **overrides})
    scene_box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    return config.setup(scene_box=scene_box, num_train_data=num_cameras, metadata={})


def training_pass(
    model, ray_bundle: RayBundle, target: Optional[torch.Tensor] = None
) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """Outputs and loss dict of one training forward pass towards ``target`` (default: random colours, seed 2)."""
    model.train()
    outputs = model(ray_bundle)
    if target is None:
        image = torch.rand(len(ray_bundle), 3, generator=torch.Generator().manual_seed(2))
    else:
        image = target.expand(len(ray_bundle), 3)
    batch = {"image": image}
    return outputs, model.get_loss_dict(outputs, batch, model.get_metrics_dict(outputs, batch))


def autograd_node_names(tensor: torch.Tensor) -> collections.Counter:
    """How often each backward function occurs in the graph behind ``tensor``."""
    names, seen, stack = collections.Counter(), set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names[type(node).__name__] += 1
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


# --- Independent references --------------------------------------------------------------------------------


def numpy_spline(ray_samples: RaySamples, density: torch.Tensor, padding: float):
    """The spline of RVS.md in numpy, from the raw tensors: knots [first spacing start, spacing midpoints, last
    spacing end], values σ·δt/δs + padding at the midpoints with the end values held out to the ends."""
    s0, s1 = (x[..., 0].detach().double().numpy() for x in (ray_samples.spacing_starts, ray_samples.spacing_ends))
    t0, t1 = (x[..., 0].detach().double().numpy() for x in (ray_samples.frustums.starts, ray_samples.frustums.ends))
    values = density[..., 0].detach().double().numpy() * (t1 - t0) / (s1 - s0) + padding
    knots = np.concatenate([s0[..., :1], (s0 + s1) / 2, s1[..., -1:]], axis=-1)
    return knots, np.concatenate([values[..., :1], values, values[..., -1:]], axis=-1)


def numpy_quantiles(knots: np.ndarray, values: np.ndarray, s: np.ndarray, interpolation: str = "linear") -> np.ndarray:
    """u = F(s) / y_f for one ray's spline (linear, or constant at each knot's value up to the next knot): exact
    trapezoids or rectangles on a grid holding the knots and the queries."""
    s = np.clip(s, knots[0], knots[-1])
    grid = np.unique(np.concatenate([knots, s.ravel()]))
    if interpolation == "linear":
        sigma = np.interp(grid, knots, values)
        areas = 0.5 * (sigma[1:] + sigma[:-1]) * np.diff(grid)
    else:
        areas = values[np.clip(np.searchsorted(knots, grid[:-1], side="right") - 1, 0, len(values) - 1)] * np.diff(grid)
    opacity = -np.expm1(-np.concatenate([[0.0], np.cumsum(areas)]))
    if opacity[-1] == 0:  # no density anywhere: uniform
        return (s - knots[0]) / (knots[-1] - knots[0])
    return (opacity / opacity[-1])[np.searchsorted(grid, s)]


def numpy_mixture_quantiles(
    knots: np.ndarray, values: np.ndarray, s: np.ndarray, mixture: float, interpolation: str = "linear"
) -> np.ndarray:
    """u = Q(s) for one ray: with mixture λ > 0, (1 − λ) times F / y_f interpolated linearly between the knots (the
    termination probability spread evenly within each knot interval) plus λ (s − s_0) / (s_m − s_0); with λ = 0,
    :func:`numpy_quantiles`."""
    if mixture == 0:
        return numpy_quantiles(knots, values, s, interpolation)
    at_knots = numpy_quantiles(knots, values, knots, interpolation)
    return (1 - mixture) * np.interp(s, knots, at_knots) + mixture * (s - knots[0]) / (knots[-1] - knots[0])


def resampled_quantiles(
    level: RaySamples,
    density: torch.Tensor,
    padding: float,
    resampled: RaySamples,
    interpolation: str = "linear",
    scale: float = 1.0,
    mixture: float = 0.0,
) -> np.ndarray:
    """The quantiles ``[rays, edges]`` of ``resampled``'s bin edges (spacing starts, then the last end; zero-width
    samples give their points) under :func:`numpy_spline` of ``level`` and ``density`` times ``scale``, mixed with the
    uniform as :func:`numpy_mixture_quantiles` does, ray by ray."""
    starts, ends = resampled.spacing_starts[..., 0].detach(), resampled.spacing_ends[..., 0].detach()
    edges = starts if torch.equal(starts, ends) else torch.cat([starts, ends[:, -1:]], dim=-1)
    knots, values = numpy_spline(level, density, padding)
    values = values * scale
    edges = edges.double().numpy()
    return np.stack([numpy_mixture_quantiles(knots[i], values[i], edges[i], mixture, interpolation) for i in range(len(edges))])


# --- The real commands ---------------------------------------------------------------------------------------

BIN = Path(sys.executable).parent

OFFLINE_ENV = {
    **os.environ,
    # Any download (e.g. LPIPS' AlexNet weights) fails at once, as on a machine without internet.
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "",
    "PYTHONWARNINGS": "ignore::DeprecationWarning,ignore::FutureWarning",
}


def run_cli(args: List[str], timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    """Runs ``BIN/args[0] args[1:]`` offline; on unexpected failure, fails with the command's output."""
    result = subprocess.run(
        [str(BIN / args[0]), *map(str, args[1:])], env=OFFLINE_ENV, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def train(method: str, data: Path, output_dir: Path, steps: int, *extra: str) -> Path:
    """``ns-train`` with the cpu-small preset and no device flag; returns the run's ``config.yml``."""
    run_cli(
        ["ns-train", method, "--data", data, "--output-dir", output_dir, "--vis", "tensorboard"]
        + ["--max-num-iterations", str(steps), "--steps-per-save", str(max(1, steps // 2))]
        + presets.cli_args("cpu-small", method)
        + list(extra)
    )
    (config,) = output_dir.glob(f"*/{method}/*/config.yml")
    return config
