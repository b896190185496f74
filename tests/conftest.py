"""Shared fixtures: a ray bundle for tiny models and small synthetic scenes generated once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nerfstudio.cameras.rays import RayBundle
from rvs_nerfstudio.data.synth import SynthConfig, generate_scene


@pytest.fixture
def ray_bundle() -> RayBundle:
    """64 rays from a camera at z = 3 looking through the scene box."""
    generator = torch.Generator().manual_seed(1)
    num_rays = 64
    directions = torch.nn.functional.normalize(
        torch.cat([0.3 * torch.randn(num_rays, 2, generator=generator), -torch.ones(num_rays, 1)], dim=-1), dim=-1
    )
    return RayBundle(
        origins=torch.tensor([0.0, 0.0, 3.0]).expand(num_rays, 3).clone(),
        directions=directions,
        pixel_area=torch.full((num_rays, 1), 1e-4),
        camera_indices=torch.randint(0, 4, (num_rays, 1), generator=generator),
    )


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory) -> Path:
    """The 360° object scene, 32 px, 12 train and 3 held-out views: for short training runs through ns-train."""
    return generate_scene(
        SynthConfig(output=tmp_path_factory.mktemp("scene") / "object", resolution=32, num_train=12, num_test=3)
    )


@pytest.fixture(scope="session")
def small_scene(tmp_path_factory) -> Path:
    """The 360° object scene, 24 px, 8 train and 2 held-out views: for runs where only the machinery matters."""
    return generate_scene(
        SynthConfig(output=tmp_path_factory.mktemp("scene") / "object", resolution=24, num_train=8, num_test=2)
    )


@pytest.fixture(scope="session")
def small_forward_scene(tmp_path_factory) -> Path:
    """The forward-facing scene at :func:`small_scene`'s size: photograph-like, no plain background, so an untrained
    model starts far from the images (the object scene on white starts close to them once rendered on its white)."""
    return generate_scene(
        SynthConfig(output=tmp_path_factory.mktemp("scene") / "forward", scene="forward", resolution=24, num_train=8, num_test=2)
    )
