"""``RVSProposalSampler``: gradients of the resampled positions and consistent nerfstudio samples.

The tests from "Independent references" on compute every expected value in numpy from the raw nerfstudio tensors
(spacing and distance bin edges), never with the module's own ``spline_from_bins`` or the spline core.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pytest
import torch
from scipy import stats

from nerfstudio.cameras.rays import RayBundle, RaySamples
from nerfstudio.model_components.ray_samplers import UniformLinDispPiecewiseSampler
from rvs_nerfstudio.models.rvs_nerfacto import RVSNerfactoModelConfig
from rvs_nerfstudio.samplers.proposal import RVSProposalSampler, spline_from_bins
from tests.helpers import build_model
from tests.helpers import numpy_mixture_quantiles as ref_mixture_quantiles
from tests.helpers import numpy_quantiles as ref_quantiles
from tests.helpers import numpy_spline as ref_spline


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


# --- Independent references ----------------------------------------------------------------------------------

CAMERA_Z = 3.0
"""The constructed rays start at (0, 0, CAMERA_Z) and look down -z, so their distance is t = CAMERA_Z - z."""


def straight_rays(nears, fars, dtype=torch.float32) -> RayBundle:
    """Rays along -z from (0, 0, CAMERA_Z), one per (near, far) pair."""
    num_rays = len(nears)
    return RayBundle(
        origins=torch.tensor([0.0, 0.0, CAMERA_Z], dtype=dtype).expand(num_rays, 3).clone(),
        directions=torch.tensor([0.0, 0.0, -1.0], dtype=dtype).expand(num_rays, 3).clone(),
        pixel_area=torch.full((num_rays, 1), 1e-4, dtype=dtype),
        nears=torch.tensor(nears, dtype=dtype)[:, None],
        fars=torch.tensor(fars, dtype=dtype)[:, None],
    )


def lin_disp_bins(bundle: RayBundle, num_bins: int) -> RaySamples:
    """Deterministic nerfstudio bins, uniform then linear in disparity: spacing is non-linear in distance past t = 1."""
    return UniformLinDispPiecewiseSampler().eval()(bundle, num_samples=num_bins)


def edges_of(ray_samples: RaySamples) -> np.ndarray:
    """The K + 1 bin edges per ray in spacing coordinates, from the samples' spacing starts and ends."""
    starts, ends = ray_samples.spacing_starts[..., 0], ray_samples.spacing_ends[..., 0]
    assert torch.equal(starts[:, 1:], ends[:, :-1])  # contiguous bins
    return torch.cat([starts, ends[:, -1:]], dim=-1).detach().double().numpy()


@pytest.mark.parametrize("padding", [0.0, 2.0])
def test_spline_from_bins_matches_numpy_reference(padding):
    """Knots and values of spline_from_bins equal the numpy construction from the spacing and distance bin edges
    of real lin-disp nerfstudio samples; its per-bin values keep the optical depth: Σ v_i δs_i = Σ σ_i δt_i."""
    bundle = straight_rays([0.5, 0.2, 1.0], [6.0, 20.0, 4.0])
    bins = lin_disp_bins(bundle, 12)
    density = 3 * torch.rand(3, 12, 1, generator=torch.Generator().manual_seed(12))
    ratio = ((bins.frustums.ends - bins.frustums.starts) / (bins.spacing_ends - bins.spacing_starts))[..., 0]
    assert ratio.max() > 5 * ratio.min()  # δt/δs really varies along the rays

    knots, values = spline_from_bins(bins, density, padding)
    ref_knots, ref_values = ref_spline(bins, density, padding)
    assert knots.shape == values.shape == (3, 14)
    np.testing.assert_allclose(knots.double().numpy(), ref_knots, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(values.double().numpy(), ref_values, rtol=1e-5)

    # Piecewise constant per bin over spacing, the values (less padding) integrate to the ray's optical depth.
    s0, s1 = bins.spacing_starts[..., 0].double().numpy(), bins.spacing_ends[..., 0].double().numpy()
    t0, t1 = bins.frustums.starts[..., 0].double().numpy(), bins.frustums.ends[..., 0].double().numpy()
    sigma = density[..., 0].double().numpy()
    per_bin = values[:, 1:-1].double().numpy() - padding
    np.testing.assert_allclose((per_bin * (s1 - s0)).sum(-1), (sigma * (t1 - t0)).sum(-1), rtol=1e-5)


RESAMPLE_EDGES = 9  # K = 8 bins
RESAMPLE_COPIES = 2000
RESAMPLE_PADDING = 2.0


def resampled_copies(
    mode: str,
    single_jitter: bool = False,
    padding: float = RESAMPLE_PADDING,
    mixture: float = 0.0,
    reference_mixture: Optional[float] = None,
    **options,
):
    """One ray copied RESAMPLE_COPIES times, resampled once by a padded sampler in ``mode``, with the numpy reference
    quantile u = F(s)/y_f of every drawn edge (spline built in numpy from the bins, padding included), or with
    ``mixture`` λ > 0 its quantile under the mixture of the spline's interval histogram with the uniform
    (``numpy_mixture_quantiles``; ``reference_mixture``, if given, replaces λ in the reference only).
    ``options`` replace the sampler's arguments (none: its defaults, which must be no padding, linear, independent
    jitter)."""
    torch.manual_seed(13)
    if options.get("defaults"):
        sampler = RVSProposalSampler((24,), 8)
    else:
        sampler = RVSProposalSampler((24,), 8, single_jitter=single_jitter, density_padding=padding, uniform_mixture=mixture)
    sampler.train(mode == "train")
    bundle = straight_rays([0.5] * RESAMPLE_COPIES, [6.0] * RESAMPLE_COPIES)
    bins = lin_disp_bins(bundle, 24)
    generator = torch.Generator().manual_seed(13)
    # Empty stretches, where the padding decides where the edges go, between bins of density up to 3.
    one_ray = 3 * torch.rand(24, generator=generator) * (torch.rand(24, generator=generator) > 0.5)
    density = one_ray[None, :, None].expand(RESAMPLE_COPIES, 24, 1)
    edges = edges_of(sampler.resample(bundle, bins, density, RESAMPLE_EDGES - 1))
    knots, values = ref_spline(bins[:1], density[:1], padding)
    share = mixture if reference_mixture is None else reference_mixture
    return ref_mixture_quantiles(knots[0], values[0], edges.ravel(), share).reshape(edges.shape)


@pytest.mark.parametrize("single_jitter", [False, True])
def test_training_resample_is_jittered_within_strata(single_jitter):
    """In training, each edge's reference quantile lies in its stratum k and u·(K+1) - k is U[0, 1) over the copies
    (KS per stratum), one jitter per edge or per ray; pooled, the edges' quantiles are U(0, 1) (KS)."""
    u = resampled_copies("train", single_jitter)
    k = np.arange(RESAMPLE_EDGES)
    fraction = u * RESAMPLE_EDGES - k
    assert (fraction > -1e-4).all() and (fraction < 1 + 1e-4).all()
    for stratum in k:
        assert stats.kstest(fraction[:, stratum], "uniform").pvalue > 1e-3, stratum
        assert fraction[:, stratum].std() > 0.25  # not constant (uniform: 0.29)
    spread_within_ray = fraction.max(-1) - fraction.min(-1)
    if single_jitter:
        assert spread_within_ray.max() < 1e-4
    else:
        assert np.median(spread_within_ray) > 0.5
    assert stats.kstest(u.ravel(), "uniform").pvalue > 1e-3


def test_eval_resample_edges_sit_at_stratum_midpoints():
    """In evaluation the edges' reference quantiles are exactly (k + 1/2) / (K + 1), identical for every copy."""
    u = resampled_copies("eval")
    expected = (np.arange(RESAMPLE_EDGES) + 0.5) / RESAMPLE_EDGES
    np.testing.assert_allclose(u, np.broadcast_to(expected, u.shape), atol=2e-6)


@pytest.mark.parametrize("padding", [0.0, 1.0])
def test_uniform_mixture_draws_the_edges_from_the_spline_mixed_with_the_uniform(padding):
    """With uniform-mixture 0.5 the evaluation edges sit at the midpoint quantiles of the numpy mixture, and in training
    each edge's mixture quantile is uniform within its stratum (KS), as with the spline alone."""
    u = resampled_copies("eval", padding=padding, mixture=0.5)
    np.testing.assert_allclose(u, np.broadcast_to((np.arange(RESAMPLE_EDGES) + 0.5) / RESAMPLE_EDGES, u.shape), atol=2e-6)
    under_the_spline_alone = resampled_copies("eval", padding=padding, mixture=0.5, reference_mixture=0.0)
    assert np.abs(under_the_spline_alone - u).max() > 0.03  # the uniform part moves the edges
    fraction = resampled_copies("train", padding=padding, mixture=0.5) * RESAMPLE_EDGES - np.arange(RESAMPLE_EDGES)
    assert (fraction > -1e-4).all() and (fraction < 1 + 1e-4).all()
    for stratum in range(RESAMPLE_EDGES):
        assert stats.kstest(fraction[:, stratum], "uniform").pvalue > 1e-3, stratum


def test_sampler_defaults_are_no_padding_linear_spline_and_independent_jitter():
    """A sampler built with defaults resamples the unpadded linear spline: its evaluation edges sit at the midpoint
    quantiles of that numpy spline, and in training each edge gets its own jitter."""
    u = resampled_copies("eval", padding=0.0, defaults=True)
    np.testing.assert_allclose(u, np.broadcast_to((np.arange(RESAMPLE_EDGES) + 0.5) / RESAMPLE_EDGES, u.shape), atol=2e-6)
    fraction = resampled_copies("train", padding=0.0, defaults=True) * RESAMPLE_EDGES - np.arange(RESAMPLE_EDGES)
    assert np.median(fraction.max(-1) - fraction.min(-1)) > 0.5


def test_single_jitter_also_applies_to_the_initial_level():
    """With single_jitter, nerfstudio's initial sampler jitters every interior edge of a ray by the same fraction of
    its stratum (one draw per ray), as nerfacto's does; without it, each edge by its own."""
    bundle = straight_rays([0.5] * 500, [6.0] * 500)
    for single, check in ((True, lambda spread: spread.max() < 1e-4), (False, lambda spread: np.median(spread) > 0.5)):
        torch.manual_seed(0)
        bins = RVSProposalSampler((16,), 8, single_jitter=single).train().initial_sampler(bundle, num_samples=16)
        edges = np.concatenate([bins.spacing_starts[..., 0].numpy(), bins.spacing_ends[:, -1:, 0].numpy()], -1)
        fraction = edges[:, 1:-1] * 16 - np.arange(1, 16) + 0.5  # interior edge k jitters over [k - 1/2, k + 1/2] / 16
        assert (fraction > -1e-4).all() and (fraction < 1 + 1e-4).all()
        assert check(fraction.max(-1) - fraction.min(-1)), single


def test_batched_rays_resample_like_a_flat_batch():
    """Rays in a [2, 32] bundle get the same evaluation samples as the same rays in a flat [64] bundle."""
    bundle = straight_rays(list(np.linspace(0.2, 1.0, 64)), list(np.linspace(4.0, 20.0, 64)))
    sampler = RVSProposalSampler((24,), 8, density_padding=1.0).eval()
    bins = lin_disp_bins(bundle, 24)
    density = 3 * torch.rand(64, 24, 1, generator=torch.Generator().manual_seed(5))
    flat = sampler.resample(bundle, bins, density, 8)
    grid = bundle.reshape((2, 32))
    batched = sampler.resample(grid, lin_disp_bins(grid, 24), density.reshape(2, 32, 24, 1), 8)
    assert batched.spacing_starts.shape == (2, 32, 8, 1)
    torch.testing.assert_close(batched.spacing_starts.reshape(64, 8, 1), flat.spacing_starts, rtol=0, atol=0)
    torch.testing.assert_close(batched.frustums.ends.reshape(64, 8, 1), flat.frustums.ends, rtol=0, atol=0)


def rvs_nerfacto_sampler() -> RVSProposalSampler:
    """The proposal sampler of an rvs-nerfacto model built with its defaults."""
    return build_model(RVSNerfactoModelConfig).proposal_sampler


@pytest.mark.parametrize(
    "make_sampler, gradient_floor",
    [(lambda: RVSProposalSampler((24,), 32, gradient_floor=0.1), 0.1), (rvs_nerfacto_sampler, 0.5)],
    ids=["sampler-0.1", "rvs-nerfacto-default-0.5"],
)
def test_gradient_floor_scales_the_gradient_of_edges_where_the_sampling_density_is_below_it(make_sampler, gradient_floor):
    """With gradient_floor ε, an edge where the sampling density g of the spline (numpy: σ̂(s) (1 − u y_f) / y_f, per unit
    of spacing, whose range is 1) is below ε has its whole gradient scaled by g / ε; the other edges keep the exact
    gradient (ε = 0, checked against a finite difference). On this ray, a faint haze and a surface, both kinds of edge occur. rvs-nerfacto's default ε is 0.5
    (README, "Decisions worth knowing")."""
    sampler = make_sampler().double().eval()
    exact_sampler = RVSProposalSampler((24,), 32, density_padding=sampler.density_padding, gradient_floor=0.0).eval()
    bundle = straight_rays([0.5], [6.0], dtype=torch.float64)
    bins = lin_disp_bins(bundle, 24)
    log_density = torch.full((1, 24, 1), -4.0, dtype=torch.float64)
    log_density[0, 10:12] = 1.0

    def edge_starts(of: RVSProposalSampler, log_sigma: torch.Tensor) -> torch.Tensor:
        return of.resample(bundle, bins, log_sigma.exp(), 32).spacing_starts[0, :, 0]

    exact, floored = (
        torch.autograd.functional.jacobian(lambda l: edge_starts(of, l), log_density)[:, 0, :, 0].numpy()
        for of in (exact_sampler, sampler)
    )
    # The exact Jacobian against a central finite difference, at its largest entry.
    edge, source = np.unravel_index(np.abs(exact).argmax(), exact.shape)
    step = torch.zeros_like(log_density)
    step[0, source, 0] = 1e-6
    with torch.no_grad():
        difference = (edge_starts(exact_sampler, log_density + step) - edge_starts(exact_sampler, log_density - step))[edge]
    assert exact[edge, source] == pytest.approx(difference.item() / 2e-6, rel=1e-4)
    starts = edge_starts(sampler, log_density).detach().numpy()
    knots, values = (array[0] for array in ref_spline(bins, log_density.exp(), sampler.density_padding))
    u = ref_quantiles(knots, values, starts)
    y_f = -np.expm1(-(0.5 * (values[1:] + values[:-1]) * np.diff(knots)).sum())
    g = np.interp(starts, knots, values) * (1 - u * y_f) / y_f
    assert (g < gradient_floor).any() and (g > gradient_floor).any()
    expected = exact * np.minimum(g / gradient_floor, 1.0)[:, None]
    assert np.abs(expected - exact).max() > 1e-3  # the scaled edges have a gradient to scale
    np.testing.assert_allclose(floored, expected, rtol=1e-6, atol=1e-12)


def distance_along(positions: torch.Tensor) -> torch.Tensor:
    """Distance ``[..., 1]`` along the straight rays of points ``[..., 3]`` on them."""
    return CAMERA_Z - positions[..., 2:]


class ScaledBump(torch.nn.Module):
    """Level 1's density: a bump at t = 2.5 with a learnable amplitude over a faint haze."""

    def __init__(self) -> None:
        super().__init__()
        self.amplitude = torch.nn.Parameter(torch.tensor(2.0, dtype=torch.float64))

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.amplitude * torch.exp(-(((distance_along(positions) - 2.5) / 0.4) ** 2)) + 0.05


class MovableBump(torch.nn.Module):
    """Level 2's density: a bump of fixed amplitude at a learnable distance."""

    def __init__(self) -> None:
        super().__init__()
        self.centre = torch.nn.Parameter(torch.tensor(3.2, dtype=torch.float64))

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return 4.0 * torch.exp(-(((distance_along(positions) - self.centre) / 0.3) ** 2)) + 0.05


def test_gradient_reaching_each_proposal_level_matches_finite_difference():
    """d loss / d parameter of each of two proposal levels' density functions, by autograd through the whole
    sampler (eval mode: no jitter, float64), equals a central finite difference of the loss; both are non-zero."""
    sampler = RVSProposalSampler((24, 16), 8, density_padding=0.5).eval()
    bundle = straight_rays([0.5, 0.8], [6.0, 5.0], dtype=torch.float64)
    levels = [ScaledBump(), MovableBump()]
    parameters = [levels[0].amplitude, levels[1].centre]
    weights = torch.linspace(1.0, 2.0, 8, dtype=torch.float64)

    def loss() -> torch.Tensor:
        samples, _, _ = sampler(bundle, density_fns=levels)
        return (weights * samples.frustums.starts[..., 0]).sum() + samples.frustums.ends[..., -1, 0].sum()

    gradients = torch.autograd.grad(loss(), parameters)
    step = 1e-6
    for name, parameter, gradient in zip(("level 1 amplitude", "level 2 centre"), parameters, gradients):
        with torch.no_grad():
            parameter += step
            plus = loss()
            parameter -= 2 * step
            minus = loss()
            parameter += step
        finite_difference = ((plus - minus) / (2 * step)).item()
        print(f"{name}: autograd {gradient.item():.6g}, finite difference {finite_difference:.6g}")
        assert abs(finite_difference) > 1e-3
        assert gradient.item() == pytest.approx(finite_difference, rel=1e-4)


# --- Proposal schedule ---------------------------------------------------------------------------------------


def test_proposal_schedule_keeps_the_gradient_on_the_steps_nerfstudios_sampler_does():
    """With the same schedule, the RVS sampler's proposal levels learn on exactly the steps on which nerfstudio's own
    ProposalNetworkSampler evaluates its proposal networks with a gradient (the reference)."""
    from nerfstudio.model_components.ray_samplers import ProposalNetworkSampler

    def schedule(step: int) -> float:
        return 1.0 if step < 20 else 3.0

    ours = RVSProposalSampler((24, 16), 8, update_sched=schedule).train()
    reference = ProposalNetworkSampler(num_proposal_samples_per_ray=(24, 16), num_nerf_samples_per_ray=8,
                                       num_proposal_network_iterations=2, update_sched=schedule).train()
    bundle = straight_rays([0.5, 0.8], [6.0, 5.0], dtype=torch.float64)
    levels = [ScaledBump(), MovableBump()]
    ours_learned, reference_learned = [], []
    for step in range(40):
        samples, weights, _ = ours(bundle, density_fns=levels)
        ours_learned.append(samples.frustums.starts.requires_grad and weights[0].requires_grad)
        assert samples.frustums.starts.requires_grad == weights[0].requires_grad == weights[1].requires_grad
        _, reference_weights, _ = reference(bundle, density_fns=levels)
        reference_learned.append(reference_weights[0].requires_grad)
        ours.step_cb(step)
        reference.step_cb(step)
    print("steps with a proposal gradient:", [step for step, learned in enumerate(ours_learned) if learned])
    assert ours_learned == reference_learned
    assert all(ours_learned[:10]) and ours_learned[10:20].count(True) == 5 and ours_learned[20:].count(True) == 5


def test_steps_without_a_proposal_gradient_keep_the_pose_gradient_and_evaluation_ignores_the_schedule():
    sampler = RVSProposalSampler((24, 16), 8, update_sched=lambda step: 1e9).train()
    sampler.step_cb(50)
    bundle = straight_rays([0.5, 0.8], [6.0, 5.0], dtype=torch.float64)
    bundle.origins.requires_grad_(True)
    levels = [ScaledBump(), MovableBump()]
    samples, weights, _ = sampler(bundle, density_fns=levels)
    assert not samples.frustums.starts.requires_grad and not weights[0].requires_grad
    (origin_grad,) = torch.autograd.grad(samples.frustums.get_positions().sum(), bundle.origins)
    torch.testing.assert_close(origin_grad, torch.full_like(origin_grad, 8.0))  # d(sum of 8 positions)/d(origin)
    samples, weights, _ = sampler.eval()(bundle, density_fns=levels)
    assert samples.frustums.starts.requires_grad and weights[0].requires_grad  # outside training: no schedule
