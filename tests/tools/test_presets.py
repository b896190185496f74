"""Presets mean the same as ``ns-train`` flags and applied in process, for every method."""

from __future__ import annotations

import copy

import pytest
import tyro

from rvs_nerfstudio.method_configs import rvs_mc, rvs_nerfacto
from rvs_nerfstudio.tools import presets

MODEL_FIELDS = ("num_proposal_samples_per_ray", "num_nerf_samples_per_ray", "num_levels", "log2_hashmap_size", "max_res")


@pytest.mark.parametrize("method", [rvs_nerfacto, rvs_mc], ids=lambda method: method.config.method_name)
def test_cpu_small_flags_set_what_apply_sets(method):
    """The flags parse on the method's own CLI (rvs-mc hides num-nerf-samples-per-ray) into the values that
    ``apply`` sets, and they are not the method's defaults."""
    config = method.config
    flags = presets.cli_args("cpu-small", config.method_name)
    parsed = tyro.cli(type(config), default=copy.deepcopy(config), args=flags)
    applied = presets.apply(copy.deepcopy(config), "cpu-small")
    for name in MODEL_FIELDS:
        assert getattr(parsed.pipeline.model, name) == getattr(applied.pipeline.model, name), name
    assert parsed.pipeline.datamanager.train_num_rays_per_batch == applied.pipeline.datamanager.train_num_rays_per_batch == 512
    assert applied.pipeline.model.num_proposal_samples_per_ray != config.pipeline.model.num_proposal_samples_per_ray

