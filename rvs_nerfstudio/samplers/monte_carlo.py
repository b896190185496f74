"""Monte Carlo points for ``rvs-mc``: K reparameterized draws per ray from the last proposal level's density spline.

Morozov et al., *Differentiable Rendering with Reparameterized Volume Sampling*, AISTATS 2024, §4: the radiance
field runs only at these K points, and the pixel colour is their mean weighted by the ray's opacity.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from nerfstudio.cameras.rays import RayBundle, RaySamples
from rvs_nerfstudio.core import spline
from rvs_nerfstudio.samplers.proposal import RVSProposalSampler, along_rays, spline_from_bins

EVAL_DRAWS_SEED = 0
"""Seed of the evaluation quantiles when several draws are averaged, so that renders are repeatable: once per
rendered image (its chunks continue one random stream), and on every call outside an image render."""


class RVSMonteCarloSampler(RVSProposalSampler):
    """RVS proposal levels whose last density spline is sampled at K points for Monte Carlo rendering.

    All levels but the last resample as in :class:`~rvs_nerfstudio.samplers.proposal.RVSProposalSampler` (density
    padding included). The last level's density at its bins defines the ray's rendering distribution: a
    spline with no padding, from which the radiance points are drawn in evaluation; in training they are drawn
    from it with ``training_padding`` added and importance-weighted (:func:`rvs_nerfstudio.core.spline.importance_sample`).
    Each point's weight (``metadata["point_weights"]``, summing to an estimate of the opacity) is what the
    renderer multiplies its colour by. Its knot intervals, weighted by their
    termination probabilities, are appended to the per-level lists for depth, accumulation and the
    distortion loss.

    Args:
        num_proposal_samples_per_ray: Samples per ray for each proposal level.
        num_radiance_samples: K, the radiance points per ray in training (independently jittered strata).
        eval_num_radiance_samples: K at evaluation.
        eval_num_draws: Independent draws of K points per ray at evaluation; with 1 the quantiles are the
            strata midpoints, with more they are jittered from a fixed seed (see :meth:`image_render`).
        training_padding: Optical depth per unit spacing added to the spline the training points are drawn from
            (0: the spline itself, weights y_f / K).
        **proposal_options: ``single_jitter``, ``interpolation``, ... as for the parent.
    """

    def __init__(
        self,
        num_proposal_samples_per_ray: Sequence[int],
        num_radiance_samples: int,
        eval_num_radiance_samples: int,
        eval_num_draws: int,
        training_padding: float = 0.0,
        **proposal_options,
    ) -> None:
        # The parent's "samples per ray handed to the radiance field" are the K training points.
        super().__init__(num_proposal_samples_per_ray, num_radiance_samples, **proposal_options)
        self.eval_num_radiance_samples = eval_num_radiance_samples
        self.eval_num_draws = eval_num_draws
        self.training_padding = training_padding
        self._image_generator: Optional[torch.Generator] = None

    @contextlib.contextmanager
    def image_render(self, device: torch.device) -> Iterator[None]:
        """The scope of one image rendered on ``device``: the evaluation draws of all its chunks come from one
        generator seeded with :data:`EVAL_DRAWS_SEED`, so chunks get independent quantiles while the image stays
        repeatable."""
        self._image_generator = torch.Generator(device).manual_seed(EVAL_DRAWS_SEED)
        try:
            yield
        finally:
            self._image_generator = None

    def radiance_samples(
        self,
        ray_bundle: RayBundle,
        ray_samples: RaySamples,
        density: Float[Tensor, "*batch num_bins 1"],
        weights_list: List[Tensor],
        ray_samples_list: List[RaySamples],
    ) -> RaySamples:
        """Zero-width samples at the K radiance points ``[num_rays, num_points]`` with their colour weights
        ``metadata["point_weights"]`` ``[num_rays, num_points, 1]``, drawn from the last level's density spline (in
        training padded, see the class); the spline's interval weights and intervals are appended to the lists."""
        knots, knot_densities = spline_from_bins(ray_samples, density)
        interval_weights = spline.interval_weights(knots, knot_densities, self.interpolation)
        weights_list.append(interval_weights[..., None])
        ray_samples_list.append(along_rays(ray_bundle, ray_samples, knots[..., :-1], knots[..., 1:]))
        u = self.quantiles(knots.shape[:-1], knots.device, knots.dtype)
        if self.training and self.training_padding > 0:
            padding = self.training_padding
            points, point_weights = spline.importance_sample(knots, knot_densities, u, padding, self.interpolation)
        else:
            points = spline.sample(knots, knot_densities, u, self.interpolation)
            y_f = interval_weights.sum(dim=-1, keepdim=True)  # the intervals' termination probabilities sum to y_f
            point_weights = (y_f / u.shape[-1]).expand_as(points)
        samples = along_rays(ray_bundle, ray_samples, points, points)
        samples.metadata = {**(samples.metadata or {}), "point_weights": point_weights[..., None]}
        return samples

    def quantiles(
        self, batch_shape: torch.Size, device: torch.device, dtype: torch.dtype
    ) -> Float[Tensor, "*batch num_points"]:
        """The radiance points' quantiles ``u`` in (0, 1) for the current mode (training or evaluation)."""
        if self.training:
            return spline.stratified_u(batch_shape, self.num_nerf_samples_per_ray, "independent", device, dtype)
        if self.eval_num_draws == 1:
            return spline.stratified_u(batch_shape, self.eval_num_radiance_samples, "none", device, dtype)
        generator = self._image_generator or torch.Generator(device).manual_seed(EVAL_DRAWS_SEED)
        draws_shape = (*batch_shape, self.eval_num_draws)
        u = spline.stratified_u(draws_shape, self.eval_num_radiance_samples, "independent", device, dtype, generator)
        return u.flatten(-2)
