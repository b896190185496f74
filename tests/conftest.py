"""Shared fixtures: tiny models and ray bundles that run in well under a second on a CPU."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Type

import pytest
import torch

from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.models.nerfacto import NerfactoModel, NerfactoModelConfig
from rvs_nerfstudio.compat import OptionalLPIPSMixin

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
