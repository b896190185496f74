"""Where a trained model puts its radiance samples, measured against its own radiance field.

A proposal sampler is good when the radiance field's samples cover the stretch of each ray where the field itself
terminates the ray. The reference is the field's termination distribution on a dense grid (``num_dense`` samples
spaced as the model's first proposal level, in its normalised spacing); the model's sampler then gives its
radiance samples on the same rays. Reported per model: the share of the samples' bin edges inside the field's
central 10–90 % termination interval, the share in front of it, and the interval's median width.
"""

from __future__ import annotations

from typing import Dict

import torch
from jaxtyping import Float
from torch import Tensor

from nerfstudio.cameras.rays import RayBundle
from nerfstudio.engine.trainer import Trainer
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.models.nerfacto import NerfactoModel

LOW, HIGH = 0.1, 0.9
"""The central termination interval: from the 10 % to the 90 % quantile of the field's termination distribution."""


def termination_interval(
    spacing: Float[Tensor, "rays dense"], weights: Float[Tensor, "rays dense"]
) -> Float[Tensor, "rays 2"]:
    """Per ray, the spacing of the first dense sample where the normalised cumulative weight reaches ``LOW`` and
    ``HIGH`` (``spacing``: sample midpoints in increasing order)."""
    cumulative = torch.cumsum(weights, dim=-1) / weights.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    levels = torch.tensor([LOW, HIGH], dtype=weights.dtype, device=weights.device).expand(len(weights), 2).contiguous()
    indices = torch.searchsorted(cumulative, levels).clamp(max=spacing.shape[-1] - 1)
    return spacing.gather(-1, indices)


def edge_shares(edges: Float[Tensor, "rays edges"], interval: Float[Tensor, "rays 2"]) -> Dict[str, float]:
    """Share of ``edges`` inside each ray's ``interval`` (bounds included) and in front of it, over all rays, and the
    intervals' median width."""
    inside = (edges >= interval[:, :1]) & (edges <= interval[:, 1:])
    return {
        "edges_inside": inside.float().mean().item(),
        "edges_in_front": (edges < interval[:, :1]).float().mean().item(),
        "interval_width": (interval[:, 1] - interval[:, 0]).quantile(0.5).item(),
    }


@torch.no_grad()
def sample_placement(model: NerfactoModel, ray_bundle: RayBundle, num_dense: int = 1024) -> Dict[str, float]:
    """:func:`edge_shares` of ``model``'s radiance samples on ``ray_bundle`` (flat) against its field's termination
    interval on a dense grid; in evaluation mode (no jitter), chunked by 256 rays."""
    was_training = model.training
    model.eval()
    dense = type(model.proposal_sampler.initial_sampler)(num_samples=num_dense, single_jitter=False).eval()
    intervals, edges = [], []
    for start in range(0, len(ray_bundle), 256):
        bundle = model.collider(ray_bundle[start : start + 256])
        grid = dense(bundle)
        density = model.field.forward(grid, compute_normals=False)[FieldHeadNames.DENSITY]
        middles = (grid.spacing_starts + grid.spacing_ends)[..., 0] / 2
        intervals.append(termination_interval(middles, grid.get_weights(density)[..., 0]))
        samples, _, _ = model.proposal_sampler(bundle, density_fns=model.density_fns)
        starts, ends = samples.spacing_starts[..., 0], samples.spacing_ends[..., 0]
        # Zero-width samples (rvs-mc's points) are their own edges; bins add the last one's end.
        edges.append(starts if torch.equal(starts, ends) else torch.cat([starts, ends[:, -1:]], dim=-1))
    model.train(was_training)
    return edge_shares(torch.cat(edges), torch.cat(intervals))


def held_out_placement(trainer: Trainer, num_rays: int = 1024) -> Dict[str, float]:
    """:func:`sample_placement` on ``num_rays`` rays spread evenly over the first held-out view."""
    camera, _ = next(iter(trainer.pipeline.datamanager.fixed_indices_eval_dataloader))
    bundle = camera.generate_rays(camera_indices=0, keep_shape=False)
    picked = torch.linspace(0, len(bundle) - 1, min(num_rays, len(bundle))).long()
    return sample_placement(trainer.pipeline.model, bundle[(picked,)])
