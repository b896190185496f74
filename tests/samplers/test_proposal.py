"""``RVSProposalSampler``: gradients of the resampled positions and consistent nerfstudio samples."""

from __future__ import annotations

import pytest
import torch

from rvs_nerfstudio.models.rvs_nerfacto import RVSNerfactoModelConfig
from rvs_nerfstudio.samplers.proposal import RVSProposalSampler
from tests.helpers import build_model


def test_sampler_gradient_matches_finite_difference(ray_bundle):
    """d(sample positions)/d(proposal density) from autograd equals a central finite difference."""
    sampler = RVSProposalSampler((16,), 8).double().eval()
    bundle = ray_bundle[:4]
    bundle.origins, bundle.directions = bundle.origins.double(), bundle.directions.double()
    bundle.nears = torch.full((4, 1), 0.5, dtype=torch.float64)
    bundle.fars = torch.full((4, 1), 6.0, dtype=torch.float64)
    bins = sampler.initial_sampler(bundle, num_samples=16)
    density = torch.rand(4, 16, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 2

    def sample_starts(d):
        return sampler.resample(bundle, bins, d, 8).frustums.starts.sum()

    density.requires_grad_(True)
    (grad,) = torch.autograd.grad(sample_starts(density), density)
    step = torch.zeros_like(density)
    step[1, 5, 0] = 1e-6
    finite_difference = (sample_starts(density + step) - sample_starts(density - step)) / 2e-6
    assert grad[1, 5, 0].item() == pytest.approx(finite_difference.item(), rel=1e-5)
    assert grad.abs().sum() > 0


def test_sampler_bins_are_consistent_nerfstudio_samples(ray_bundle):
    """Sorted bins inside [near, far], spacing coordinates mapping back to the same distances."""
    model = build_model(RVSNerfactoModelConfig).eval()
    bundle = model.collider(ray_bundle)
    ray_samples, weights_list, samples_list = model.proposal_sampler(bundle, density_fns=model.density_fns)
    starts, ends = ray_samples.frustums.starts[..., 0], ray_samples.frustums.ends[..., 0]
    assert ray_samples.frustums.starts.shape == (len(bundle), 8, 1)
    assert torch.all(ends >= starts) and torch.all(starts[:, 1:] >= ends[:, :-1] - 1e-5)
    assert torch.all(starts >= bundle.nears - 1e-5) and torch.all(ends <= bundle.fars + 1e-3)
    spacing = ray_samples.spacing_starts[..., 0]
    assert torch.all((spacing >= 0) & (spacing <= 1))
    torch.testing.assert_close(ray_samples.spacing_to_euclidean_fn(spacing), starts, rtol=1e-4, atol=1e-5)
    assert [w.shape[1] for w in weights_list] == [32, 16] and len(samples_list) == 2
