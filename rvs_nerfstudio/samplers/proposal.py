"""nerfstudio adapter for reparameterized volume sampling (RVS).

:class:`RVSProposalSampler` replaces nerfstudio's ``ProposalNetworkSampler``: at every proposal level
the proposal density, evaluated at the current samples, is interpolated by a density spline along the
ray and the next level's bin edges are drawn with the reparameterized inverse CDF of
``rvs_nerfstudio.core.spline``. Sample positions stay differentiable (``PDFSampler`` detaches them), so the
photometric loss trains every proposal network and no interlevel loss is needed.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

from nerfstudio.cameras.rays import RayBundle, RaySamples
from nerfstudio.model_components.ray_samplers import Sampler, SpacedSampler, UniformLinDispPiecewiseSampler
from rvs_nerfstudio.core import spline


def spline_from_bins(
    ray_samples: RaySamples, densities: Float[Tensor, "*batch num_bins 1"], padding: float = 0.0
) -> Tuple[Float[Tensor, "*batch num_bins_plus_2"], Float[Tensor, "*batch num_bins_plus_2"]]:
    """A density spline over the normalised spacing coordinate through the bins' midpoints.

    Each bin's density is converted to optical depth per unit spacing, ``σ δt / δs``, so the spline's integral
    equals the ray's optical depth while far space stays as compressed as in the sampler's spacing (and the
    fields' scene contraction). ``padding`` is added everywhere, so a share of samples always covers the
    whole ray. The end densities are held constant out to the first bin's start and the last bin's end.

    Returns:
        Knots in spacing coordinates and the spline's values there.
    """
    spacing_starts, spacing_ends = ray_samples.spacing_starts[..., 0], ray_samples.spacing_ends[..., 0]
    tiny = torch.finfo(densities.dtype).tiny
    per_spacing = densities[..., 0] * ray_samples.deltas[..., 0] / (spacing_ends - spacing_starts).clamp_min(tiny)
    values = per_spacing + padding
    knots = torch.cat([spacing_starts[..., :1], (spacing_starts + spacing_ends) / 2, spacing_ends[..., -1:]], dim=-1)
    return knots, torch.cat([values[..., :1], values, values[..., -1:]], dim=-1)


class RVSProposalSampler(Sampler):
    """Hierarchical proposal sampling with reparameterized inverse-CDF resampling.

    Args:
        num_proposal_samples_per_ray: Samples per ray for each proposal level; the first is drawn by
            ``initial_sampler``.
        num_nerf_samples_per_ray: Samples per ray handed to the radiance field.
        single_jitter: One stratification jitter per ray instead of one per sample.
        interpolation: Density spline between proposal samples, ``"linear"`` or ``"constant"``.
        density_padding: Optical depth per unit spacing added along every ray before resampling.
        initial_sampler: Spaced sampler of the first level; its spacing coordinate is the one the density
            splines live in. Uniform-then-linear-in-disparity by default.
        update_sched: Nerfacto's proposal schedule: step → steps to wait between training steps on which the proposal
            levels keep their gradient (and always on the first 10); on the others their samples are placed
            without one, as nerfacto's are. None: on every step. :meth:`step_cb` counts the steps.
        gradient_floor: ε of :func:`rvs_nerfstudio.core.spline.sample`, the floor on the sampling density (relative to
            uniform in spacing) below which a sample's gradient is scaled down; used where ``uniform_mixture`` is 0.
        uniform_mixture: Share of each level's samples drawn uniformly in spacing, the others from the spline's
            interval histogram (:func:`rvs_nerfstudio.core.spline.sample_mixture`); 0: the spline's exact inverse CDF.
    """

    def __init__(
        self,
        num_proposal_samples_per_ray: Sequence[int],
        num_nerf_samples_per_ray: int,
        single_jitter: bool = False,
        interpolation: spline.Interpolation = "linear",
        density_padding: float = 0.0,
        initial_sampler: Optional[SpacedSampler] = None,
        update_sched: Optional[Callable[[int], float]] = None,
        gradient_floor: float = spline.DEFAULT_GRADIENT_FLOOR,
        uniform_mixture: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_proposal_samples_per_ray = tuple(num_proposal_samples_per_ray)
        self.num_nerf_samples_per_ray = num_nerf_samples_per_ray
        self.single_jitter = single_jitter
        self.interpolation: spline.Interpolation = interpolation
        self.density_padding = density_padding
        self.initial_sampler = initial_sampler or UniformLinDispPiecewiseSampler(single_jitter=single_jitter)
        self.update_sched = update_sched
        self.gradient_floor = gradient_floor
        self.uniform_mixture = uniform_mixture
        self._step = 0
        self._steps_since_update = 0
        self._anneal = 1.0

    def set_anneal(self, anneal: float) -> None:
        """Nerfacto's proposal-weight anneal (its callback calls this before each training step): in training every
        level's padded spline is scaled by ``anneal`` in [0, 1] before resampling, so 0 samples uniformly in the
        spacing and 1 follows the spline. Evaluation always follows the spline."""
        self._anneal = anneal

    def step_cb(self, step: int) -> None:
        """Training callback after each step: counts steps for ``update_sched``."""
        self._step = step
        self._steps_since_update += 1

    def proposals_learn(self) -> bool:
        """Whether this training step's proposal levels keep their gradient (see ``update_sched``); True outside
        training."""
        if self.update_sched is None or not self.training:
            return True
        learn = self._steps_since_update > self.update_sched(self._step) or self._step < 10
        if learn:
            self._steps_since_update = 0
        return learn

    def generate_ray_samples(
        self, ray_bundle: Optional[RayBundle] = None, density_fns: Optional[List[Callable]] = None
    ) -> Tuple[RaySamples, List[Tensor], List[RaySamples]]:
        """Runs the proposal levels.

        Returns:
            The radiance field's samples, and per proposal level its quadrature weights
            ``[num_rays, num_samples, 1]`` and samples (for depth outputs and the distortion loss).
        """
        assert ray_bundle is not None and density_fns is not None
        with contextlib.nullcontext() if self.proposals_learn() else torch.no_grad():
            ray_samples, density, weights_list, ray_samples_list = self.proposal_levels(ray_bundle, density_fns)
        # Outside no_grad: the radiance field's samples keep the camera optimizer's pose gradient.
        radiance_samples = self.radiance_samples(ray_bundle, ray_samples, density, weights_list, ray_samples_list)
        return radiance_samples, weights_list, ray_samples_list

    def radiance_samples(
        self,
        ray_bundle: RayBundle,
        ray_samples: RaySamples,
        density: Float[Tensor, "*batch num_bins 1"],
        weights_list: List[Tensor],
        ray_samples_list: List[RaySamples],
    ) -> RaySamples:
        """The radiance field's samples from the last proposal level's ``ray_samples`` and ``density`` there.

        Here ``num_nerf_samples_per_ray`` bins resampled from its density spline; subclasses may also append
        to the per-level lists.
        """
        return self.resample(ray_bundle, ray_samples, density, self.num_nerf_samples_per_ray)

    def proposal_levels(
        self, ray_bundle: RayBundle, density_fns: Sequence[Callable]
    ) -> Tuple[RaySamples, Float[Tensor, "*batch num_bins 1"], List[Tensor], List[RaySamples]]:
        """Evaluates each density function at its level's samples, resampling from its spline between levels.

        The samples lie on the rays without the camera optimizer's pose gradient, so poses learn through the
        radiance field's samples only, as in nerfacto; their distances keep every proposal network's gradient.

        Returns:
            The last level's samples and density there, and per level its quadrature weights
            ``[num_rays, num_samples, 1]`` and samples.
        """
        origins, directions = ray_bundle.origins.detach(), ray_bundle.directions.detach()
        rays = dataclasses.replace(ray_bundle, origins=origins, directions=directions)
        ray_samples = self.initial_sampler(rays, num_samples=self.num_proposal_samples_per_ray[0])
        weights_list, ray_samples_list = [], []
        for level, density_fn in enumerate(density_fns):
            if level > 0:
                ray_samples = self.resample(rays, ray_samples, density, self.num_proposal_samples_per_ray[level])
            density = density_fn(ray_samples.frustums.get_positions())
            weights_list.append(ray_samples.get_weights(density))
            ray_samples_list.append(ray_samples)
        return ray_samples, density, weights_list, ray_samples_list

    def resample(
        self,
        ray_bundle: RayBundle,
        ray_samples: RaySamples,
        density: Float[Tensor, "*batch num_bins 1"],
        num_samples: int,
    ) -> RaySamples:
        """Draws ``num_samples`` bins (``num_samples + 1`` edges) from the density spline through ``density``."""
        knots, knot_densities = spline_from_bins(ray_samples, density, self.density_padding)
        if self.training and self._anneal < 1:
            knot_densities = knot_densities * self._anneal
        jitter = ("single" if self.single_jitter else "independent") if self.training else "none"
        u = spline.stratified_u(knots.shape[:-1], num_samples + 1, jitter, knots.device, knots.dtype)
        if self.uniform_mixture > 0:
            spacing = spline.sample_mixture(knots, knot_densities, u, self.uniform_mixture, self.interpolation)
        else:
            spacing = spline.sample(knots, knot_densities, u, self.interpolation, self.gradient_floor)
        return along_rays(ray_bundle, ray_samples, spacing[..., :-1], spacing[..., 1:])


def along_rays(
    ray_bundle: RayBundle,
    level: RaySamples,
    spacing_starts: Float[Tensor, "*batch n"],
    spacing_ends: Float[Tensor, "*batch n"],
) -> RaySamples:
    """Samples on ``ray_bundle`` between spacing coordinates of ``level``'s sampler, placed in distance."""
    assert level.spacing_to_euclidean_fn is not None
    return ray_bundle.get_ray_samples(
        bin_starts=level.spacing_to_euclidean_fn(spacing_starts)[..., None],
        bin_ends=level.spacing_to_euclidean_fn(spacing_ends)[..., None],
        spacing_starts=spacing_starts[..., None],
        spacing_ends=spacing_ends[..., None],
        spacing_to_euclidean_fn=level.spacing_to_euclidean_fn,
    )
