"""The ``rvs-mc`` Monte Carlo model: unbiased colour, gradients, radiance-call counts, training and the real CLIs."""

from __future__ import annotations

import json
import math
from typing import Callable, List

import numpy as np
import pytest
import torch
from scipy import stats

from nerfstudio.cameras.camera_optimizers import CameraOptimizerConfig
from nerfstudio.cameras.rays import RayBundle, RaySamples
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.utils.eval_utils import eval_setup
from rvs_nerfstudio.core import spline
from rvs_nerfstudio.data.parsers import BACKGROUND_METADATA_KEY
from rvs_nerfstudio.data.synth import SynthConfig, generate_scene
from rvs_nerfstudio.models.rvs_mc import RVSMonteCarloModelConfig
from rvs_nerfstudio.models.rvs_nerfacto import RVSNerfactoModelConfig
from rvs_nerfstudio.samplers.monte_carlo import RVSMonteCarloSampler
from rvs_nerfstudio.samplers.proposal import spline_from_bins
from rvs_nerfstudio.tools import presets
from tests.helpers import TINY_FIELD, build_model, resampled_quantiles, run_cli, train, training_pass

CAMERA_Z = 3.0
"""The constructed ray starts at (0, 0, CAMERA_Z) and looks down -z, so its distance is t = CAMERA_Z - z."""

ONE_RAY_SETTINGS = dict(near_plane=2.0, far_plane=6.0, camera_optimizer=CameraOptimizerConfig(mode="off"))
"""Model settings for the constructed ray: t in [2, 6] and no pose refinement."""


def distance(positions: torch.Tensor) -> torch.Tensor:
    """Distance along the constructed ray ``[..., 1]`` of points ``[..., 3]`` on it."""
    return CAMERA_Z - positions[..., 2:]


def bump(t: torch.Tensor, centre, width) -> torch.Tensor:
    return torch.exp(-(((t - centre) / width) ** 2))


def one_ray(num_copies: int) -> RayBundle:
    """``num_copies`` copies of the constructed ray (every copy gets its own random draws in training)."""
    return RayBundle(
        origins=torch.tensor([0.0, 0.0, CAMERA_Z]).expand(num_copies, 3).clone(),
        directions=torch.tensor([0.0, 0.0, -1.0]).expand(num_copies, 3).clone(),
        pixel_area=torch.full((num_copies, 1), 1e-4),
        camera_indices=torch.zeros(num_copies, 1, dtype=torch.long),
    )


class KnownColourField(torch.nn.Module):
    """Stands in for the radiance field: a fixed colour function of the distance along the constructed ray."""

    def __init__(self, colour: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.colour = colour

    def forward(self, ray_samples: RaySamples, compute_normals: bool = False):
        rgb = self.colour(distance(ray_samples.frustums.get_positions()))
        return {FieldHeadNames.RGB: rgb, FieldHeadNames.DENSITY: torch.zeros_like(rgb[..., :1])}


def smooth_colour(t: torch.Tensor) -> torch.Tensor:
    """A colour that varies along the whole ray: red rises past t = 3.5, green oscillates, blue grows."""
    return torch.cat([torch.sigmoid((t - 3.5) / 0.2), 0.5 + 0.4 * torch.sin(3 * t), 0.3 + 0.1 * t], dim=-1)


def fixed_density(positions: torch.Tensor) -> torch.Tensor:
    """Two surfaces of different sharpness and a thin haze: total opacity about 0.9."""
    t = distance(positions)
    return 3.0 * bump(t, 3.0, 0.15) + 0.8 * bump(t, 4.2, 0.3) + 0.05


# --- The estimator is unbiased, and stratification lowers its variance ----------------------------------


def fixed_spline_model(num_radiance_samples: int, **overrides):
    """A model whose single density level is ``fixed_density`` on deterministic bins, with a known colour."""
    model = build_model(
        RVSMonteCarloModelConfig,
        num_proposal_iterations=1,
        num_proposal_samples_per_ray=(48,),
        num_radiance_samples=num_radiance_samples,
        background_color="white",
        **{**ONE_RAY_SETTINGS, **overrides},
    ).train()
    model.density_fns = [fixed_density]
    model.field = KnownColourField(smooth_colour)
    model.proposal_sampler.initial_sampler.train_stratified = False
    return model


def quadrature_colour(model) -> torch.Tensor:
    """The model's spline colour ∫ c dF + (1 - y_f)·white, by a 200k-interval midpoint rule in float64."""
    bins = model.proposal_sampler.initial_sampler(model.collider(one_ray(1)), num_samples=48)
    knots, densities = spline_from_bins(bins, fixed_density(bins.frustums.get_positions()))
    knots, densities = knots[0].double(), densities[0].double()
    grid = torch.linspace(knots[0].item(), knots[-1].item(), 200_001, dtype=torch.float64)
    opacity = spline.opacity(grid, knots, densities)
    t = bins.spacing_to_euclidean_fn((grid[None, 1:] + grid[None, :-1]) / 2)[0, :, None]
    return (smooth_colour(t) * torch.diff(opacity)[:, None]).sum(0) + (1 - opacity[-1])


def estimates(model, num_draws: int) -> torch.Tensor:
    """``num_draws`` independent training-mode colour estimates ``[num_draws, 3]`` of the constructed ray."""
    with torch.no_grad():
        return model(one_ray(num_draws))["rgb"].double()


@pytest.mark.parametrize("num_radiance_samples", [1, 4, 16])
@pytest.mark.parametrize("training_padding", [0.0, RVSMonteCarloModelConfig.training_padding])
def test_colour_estimate_is_unbiased_and_stratification_lowers_variance(num_radiance_samples, training_padding, monkeypatch):
    """Training-mode colour against the quadrature, drawn from the spline itself (0) and importance-weighted from the
    padded spline (the default)."""
    torch.manual_seed(0)
    model = fixed_spline_model(num_radiance_samples, training_padding=training_padding)
    reference = quadrature_colour(model)
    stratified = estimates(model, 20_000)
    monkeypatch.setattr(
        model.proposal_sampler,
        "quantiles",
        lambda batch_shape, device, dtype: torch.rand((*batch_shape, num_radiance_samples), device=device, dtype=dtype),
    )
    plain = estimates(model, 20_000)
    for name, draws in (("stratified", stratified), ("plain", plain)):
        standard_error = draws.std(0) / math.sqrt(len(draws))
        error = (draws.mean(0) - reference).abs()
        print(f"K={num_radiance_samples} {name}: |mean - quadrature| / s.e. = {(error / standard_error).tolist()}")
        assert torch.all(error < 3 * standard_error), (name, draws.mean(0), reference, standard_error)
    variance_ratio = (stratified.var(0).sum() / plain.var(0).sum()).item()
    print(f"K={num_radiance_samples}: variance stratified / plain = {variance_ratio:.3f}")
    if num_radiance_samples > 1:  # with one stratum both are the same estimator
        assert variance_ratio < 0.5


# --- Gradients from the RGB loss ---------------------------------------------------------------------------


def grad_l1(module: torch.nn.Module) -> float:
    return sum(p.grad.abs().sum().item() for p in module.parameters() if p.grad is not None)


def test_rgb_loss_alone_trains_every_density_network_and_the_radiance_field(ray_bundle):
    assert "distortion_loss" not in training_pass(build_model(RVSMonteCarloModelConfig), ray_bundle)[1]  # off by default
    model = build_model(RVSMonteCarloModelConfig, use_distortion_loss=True)
    losses = training_pass(model, ray_bundle)[1]
    assert "interlevel_loss" not in losses
    assert set(losses) == {"rgb_loss", "distortion_loss", "camera_opt_regularizer"}
    losses["rgb_loss"].backward()
    density_norms = [grad_l1(net) for net in model.proposal_networks]
    print("gradient L1 norms from the RGB loss: density networks", density_norms, "radiance", grad_l1(model.field))
    assert len(density_norms) == 2 and all(n > 0 for n in density_norms)
    assert grad_l1(model.field) > 0


RED, GREEN = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])


def red_then_green(t: torch.Tensor) -> torch.Tensor:
    """Red before t = 3.5, green after, with a smooth transition (so positions carry a gradient too)."""
    mix = torch.sigmoid((t - 3.5) / 0.15)
    return (1 - mix) * RED + mix * GREEN


class TwoSurfaces(torch.nn.Module):
    """Density of a red surface A at t = 3 and a green surface B at t = 4, each with a learnable log-scale."""

    def __init__(self) -> None:
        super().__init__()
        self.log_scales = torch.nn.Parameter(torch.zeros(2))

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        t = distance(positions)
        scales = self.log_scales.exp()
        return 2.6 * (scales[0] * bump(t, 3.0, 0.15) + scales[1] * bump(t, 4.0, 0.15))


class MovableSurface(torch.nn.Module):
    """One surface straddling the red-green boundary, at a learnable distance."""

    def __init__(self) -> None:
        super().__init__()
        self.centre = torch.nn.Parameter(torch.tensor(3.45))

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return 6.0 * bump(distance(positions), self.centre, 0.2)


def constructed_ray_model(density: torch.nn.Module):
    """Two RVS density levels, both ``density``, and the red-then-green colour on a black background."""
    model = build_model(RVSMonteCarloModelConfig, num_radiance_samples=8, background_color="black", **ONE_RAY_SETTINGS)
    model.density_fns = [density, density]
    model.field = KnownColourField(red_then_green)
    return model


@pytest.mark.parametrize("target", ["A", "B"])
def test_gradient_moves_opacity_to_the_surface_of_the_target_colour(target):
    torch.manual_seed(0)
    density = TwoSurfaces()
    model = constructed_ray_model(density)
    training_pass(model, one_ray(1024), RED if target == "A" else GREEN)[1]["rgb_loss"].backward()
    grad_a, grad_b = density.log_scales.grad.tolist()
    print(f"target {target}: dL/dlog(scale A) = {grad_a:.4g}, dL/dlog(scale B) = {grad_b:.4g}")
    if target == "A":
        assert grad_a < 0 < grad_b  # descent grows A and shrinks B
    else:
        assert grad_b < 0 < grad_a


@pytest.mark.parametrize("target, direction", [("red", -1), ("green", +1)])
def test_gradient_moves_a_surface_towards_the_target_colour(target, direction):
    """A pure change of position, same opacity: the gradient flows through the sample positions."""
    torch.manual_seed(0)
    density = MovableSurface()
    model = constructed_ray_model(density)
    training_pass(model, one_ray(1024), RED if target == "red" else GREEN)[1]["rgb_loss"].backward()
    step = -density.centre.grad.item()  # gradient descent
    print(f"target {target}: descent moves the surface by {step:.4g} per unit step (red is nearer)")
    assert step * direction > 0


# --- Radiance-field calls, evaluation options ----------------------------------------------------------------


def count_radiance_points(model) -> List[int]:
    """Wraps the radiance field so that each call appends its number of points to the returned list."""
    calls: List[int] = []
    forward = model.field.forward

    def counted(ray_samples: RaySamples, *args, **kwargs):
        calls.append(ray_samples.frustums.starts[..., 0].numel())
        return forward(ray_samples, *args, **kwargs)

    model.field.forward = counted
    return calls


def test_radiance_field_runs_at_exactly_k_points_per_ray(ray_bundle):
    model = build_model(RVSMonteCarloModelConfig, num_radiance_samples=3, eval_num_radiance_samples=5, eval_num_draws=2)
    calls = count_radiance_points(model)
    training_pass(model, ray_bundle, torch.zeros(3))[1]["rgb_loss"].backward()
    assert calls == [len(ray_bundle) * 3]

    calls.clear()
    model.eval()
    image_rays = ray_bundle.reshape((8, 8))
    outputs = model.get_outputs_for_camera_ray_bundle(image_rays)
    assert sum(calls) == 64 * 5 * 2
    metrics, images = model.get_image_metrics_and_images(outputs, {"image": torch.rand(8, 8, 3)})
    assert metrics["radiance_evals_per_ray"] == 10
    assert {"img", "depth", "accumulation", "prop_depth_0", "prop_depth_1"} <= set(images)


def test_eval_k_defaults_to_training_k(ray_bundle):
    model = build_model(RVSMonteCarloModelConfig, num_radiance_samples=6).eval()
    calls = count_radiance_points(model)
    with torch.no_grad():
        model(ray_bundle)
    assert calls == [len(ray_bundle) * 6]


def test_viewer_slider_sets_render_k_and_leaves_training_k(ray_bundle):
    from nerfstudio.viewer.utils import parse_object
    from nerfstudio.viewer.viewer_elements import ViewerElement

    model = build_model(RVSMonteCarloModelConfig, num_radiance_samples=3)
    ((path, slider),) = parse_object(model, ViewerElement, "Custom Elements")  # how the viewer finds it
    assert slider.value == 3 and slider.min == 1 and slider.step == 1
    slider.value = 7
    slider.cb_hook(slider)  # what the viewer runs on a change
    calls = count_radiance_points(model)
    with torch.no_grad():
        model.eval()(ray_bundle)
    training_pass(model, ray_bundle, torch.zeros(3))[1]
    assert calls == [len(ray_bundle) * 7, len(ray_bundle) * 3]


@pytest.mark.parametrize("eval_num_draws", [1, 3])
def test_eval_render_is_repeatable(ray_bundle, eval_num_draws):
    model = build_model(RVSMonteCarloModelConfig, eval_num_draws=eval_num_draws).eval()
    with torch.no_grad():
        first, second = model(ray_bundle), model(ray_bundle)
    for key in ("rgb", "depth", "accumulation"):
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0)
    assert torch.isfinite(first["depth"]).all() and torch.isfinite(first["prop_depth_1"]).all()


EVAL_K, EVAL_DRAWS = 5, 3


def eval_quantiles(num_rays: int, eval_num_draws: int = EVAL_DRAWS) -> np.ndarray:
    """Evaluation-mode quantiles of ``num_rays`` rays from a fresh sampler, ``[num_rays, draws, K]`` in float64."""
    sampler = RVSMonteCarloSampler((16,), 4, eval_num_radiance_samples=EVAL_K, eval_num_draws=eval_num_draws).eval()
    u = sampler.quantiles(torch.Size([num_rays]), torch.device("cpu"), torch.float64)
    again = sampler.quantiles(torch.Size([num_rays]), torch.device("cpu"), torch.float64)
    assert u.shape == (num_rays, eval_num_draws * EVAL_K) and torch.equal(u, again)  # repeatable across calls
    return u.reshape(num_rays, eval_num_draws, EVAL_K).numpy()


def test_eval_draws_are_jittered_within_strata_and_independent():
    """With several evaluation draws, u·K - k of each stratum is U[0, 1) over rays and draws (KS against scipy's
    uniform), and the draws of one ray, and different rays, get different jitter (uncorrelated)."""
    u = eval_quantiles(2000)
    fraction = u * EVAL_K - np.arange(EVAL_K)
    assert (fraction >= 0).all() and (fraction < 1).all()
    for stratum in range(EVAL_K):
        assert stats.kstest(fraction[..., stratum].ravel(), "uniform").pvalue > 1e-3, stratum
        assert fraction[..., stratum].std() > 0.25  # not the midpoints (uniform: 0.29)
    for first, second in ((0, 1), (0, 2), (1, 2)):  # the draws of one ray
        assert (np.abs(fraction[:, first] - fraction[:, second]).max(-1) > 0).all()
        assert abs(np.corrcoef(fraction[:, first].ravel(), fraction[:, second].ravel())[0, 1]) < 0.1
    assert len(np.unique(u.reshape(2000, -1), axis=0)) == 2000  # no two rays share their quantiles
    assert abs(np.corrcoef(fraction[:-1].ravel(), fraction[1:].ravel())[0, 1]) < 0.1  # neighbouring rays


def test_single_eval_draw_is_the_strata_midpoints():
    """eval_num_draws = 1: the deterministic midpoints (k + 1/2) / K, in and outside an image render."""
    midpoints = (np.arange(EVAL_K) + 0.5) / EVAL_K
    np.testing.assert_array_equal(eval_quantiles(7, 1), np.broadcast_to(midpoints, (7, 1, EVAL_K)))
    sampler = RVSMonteCarloSampler((16,), 4, eval_num_radiance_samples=EVAL_K, eval_num_draws=1).eval()
    with sampler.image_render(torch.device("cpu")):
        u = sampler.quantiles(torch.Size([7]), torch.device("cpu"), torch.float64).numpy()
    np.testing.assert_array_equal(u, np.broadcast_to(midpoints, (7, EVAL_K)))


def test_image_chunks_get_independent_draws_and_the_image_is_repeatable():
    """A camera render of identical rays in two chunks: the chunks' quantiles and colours differ (no chunk repeats
    the seed), the quantiles stay in their strata, and rendering the image again reproduces it exactly."""
    model = fixed_spline_model(num_radiance_samples=4).eval()
    model.proposal_sampler.eval_num_draws = 2
    model.config.eval_num_rays_per_chunk = 8
    recorded: List[torch.Tensor] = []
    quantiles = model.proposal_sampler.quantiles

    def recording_quantiles(*args):
        recorded.append(quantiles(*args))
        return recorded[-1]

    model.proposal_sampler.quantiles = recording_quantiles
    image = one_ray(16).reshape((2, 8))

    first = model.get_outputs_for_camera_ray_bundle(image)
    first_quantiles = list(recorded)
    assert len(first_quantiles) == 2 and first_quantiles[0].shape == (8, 8)
    assert not torch.isclose(first_quantiles[0], first_quantiles[1]).any()
    assert (first["rgb"][0] != first["rgb"][1]).any(-1).all()  # every pixel of chunk 2 differs from chunk 1
    fraction = torch.cat(first_quantiles).reshape(16, 2, 4) * 4 - torch.arange(4)
    assert (fraction >= 0).all() and (fraction < 1).all()

    recorded.clear()
    second = model.get_outputs_for_camera_ray_bundle(image)
    assert len(recorded) == 2
    for a, b in zip(first_quantiles, recorded):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for key in ("rgb", "depth", "accumulation"):
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0)


def numpy_spline(bins: RaySamples, density: torch.Tensor):
    """RVS.md's density spline of one ray in numpy, from the raw bins: knots at the spacing midpoints plus both ends,
    values σ·δt/δs (no padding: the rendering spline), the end values held out to the ends."""
    s0, s1 = (x[0, :, 0].double().numpy() for x in (bins.spacing_starts, bins.spacing_ends))
    t0, t1 = (x[0, :, 0].double().numpy() for x in (bins.frustums.starts, bins.frustums.ends))
    values = density[0, :, 0].double().numpy() * (t1 - t0) / (s1 - s0)
    return np.concatenate([s0[:1], (s0 + s1) / 2, s1[-1:]]), np.concatenate([values[:1], values, values[-1:]])


@pytest.mark.parametrize("interpolation", ["linear", "constant"])
def test_depth_and_accumulation_are_the_spline_quadrature(interpolation):
    """Accumulation is y_f of the (linear or constant) spline, expected_depth its expected termination distance and
    depth the median (nerfacto's: the midpoint of the interval where the termination probability reaches 1/2), over
    the spline's intervals (not a K-point average), all from a numpy quadrature of the spline in the test."""
    model = fixed_spline_model(num_radiance_samples=2, density_interpolation=interpolation)
    with torch.no_grad():
        outputs = model(one_ray(1))
    bins = model.proposal_sampler.initial_sampler(model.collider(one_ray(1)), num_samples=48)
    knots, values = numpy_spline(bins, fixed_density(bins.frustums.get_positions()))
    widths = np.diff(knots)
    areas = 0.5 * (values[:-1] + values[1:]) * widths if interpolation == "linear" else values[:-1] * widths
    transmittance = np.exp(-np.concatenate([[0.0], np.cumsum(areas)]))
    weights = transmittance[:-1] - transmittance[1:]
    distances = bins.spacing_to_euclidean_fn(torch.from_numpy(knots).float()[None]).double().numpy()[0]
    expected_depth = (weights * (distances[1:] + distances[:-1]) / 2).sum() / weights.sum()
    assert outputs["accumulation"].item() == pytest.approx(1 - transmittance[-1], rel=1e-5)
    midpoints = (distances[1:] + distances[:-1]) / 2
    median_depth = midpoints[np.argmax(np.cumsum(weights) >= 0.5)]
    assert outputs["expected_depth"].item() == pytest.approx(expected_depth, rel=1e-5)
    assert outputs["depth"].item() == pytest.approx(median_depth, rel=1e-5)
    assert 3.0 < outputs["depth"].item() < 4.2 and outputs["depth"].item() != pytest.approx(expected_depth, rel=1e-3)


@pytest.mark.parametrize("mode, draws", [("train", 1), ("eval", 3)])
def test_each_stratum_of_a_draw_gets_its_own_jitter(mode, draws):
    """Training quantiles, and each of several evaluation draws, jitter every stratum independently (not one offset
    per ray), uniformly within the stratum, in the dtype asked for."""
    sampler = RVSMonteCarloSampler((16,), EVAL_K, eval_num_radiance_samples=EVAL_K, eval_num_draws=draws)
    sampler.train(mode == "train")
    u = sampler.quantiles(torch.Size([2000]), torch.device("cpu"), torch.float64)
    assert u.dtype == torch.float64 and u.shape == (2000, draws * EVAL_K)
    fraction = u.reshape(2000, draws, EVAL_K).numpy() * EVAL_K - np.arange(EVAL_K)
    assert (fraction >= 0).all() and (fraction < 1).all()
    assert np.median(fraction.max(-1) - fraction.min(-1)) > 0.5  # one offset per draw would give 0
    for stratum in range(EVAL_K):
        assert stats.kstest(fraction[..., stratum].ravel(), "uniform").pvalue > 1e-3, stratum


def test_last_sample_background_is_the_colour_at_the_farthest_point():
    """Ĉ = y_f·mean c(t_k) + (1 - y_f)·c(t_K): nerfacto's background choice, from the K evaluations alone (points
    drawn from the spline itself, so that every weight is y_f / K)."""
    torch.manual_seed(0)
    model = fixed_spline_model(num_radiance_samples=4, training_padding=0.0)
    model.config.background_color = model.renderer_rgb.background_color = "last_sample"
    positions = []
    model.field = KnownColourField(lambda t: positions.append(t) or smooth_colour(t))
    with torch.no_grad():
        outputs = model(one_ray(5))
    (t,) = positions  # one field call, at exactly K points per ray
    assert t.shape == (5, 4, 1) and (t.diff(dim=1) > 0).all()
    y_f = outputs["accumulation"]
    colours = smooth_colour(t)
    expected = y_f * colours.mean(1) + (1 - y_f) * colours[:, -1]
    torch.testing.assert_close(outputs["rgb"], expected)
    assert 0.5 < y_f.min() and y_f.max() < 0.99  # both terms matter


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(num_radiance_samples=0), "num-radiance-samples must be at least 1"),
        (dict(eval_num_radiance_samples=0), "eval-num-radiance-samples must be at least 1"),
        (dict(eval_num_draws=0), "eval-num-draws must be at least 1"),
        (dict(training_padding=-0.5), "training-padding must be 0 or more"),
        (dict(num_proposal_iterations=0, num_proposal_samples_per_ray=()), "at least one density network"),
        (dict(num_proposal_samples_per_ray=(32,)), "one count per proposal level"),
        (dict(num_proposal_samples_per_ray=(16, 32)), "must not grow from one level to the next"),
    ],
)
def test_impossible_options_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        build_model(RVSMonteCarloModelConfig, **overrides)


# --- Training and the real CLIs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, metadata, expected",
    [
        ("auto", {BACKGROUND_METADATA_KEY: torch.ones(3)}, [1.0, 1.0, 1.0]),  # Blender through auto-data
        ("auto", {BACKGROUND_METADATA_KEY: torch.tensor([0.2, 0.4, 0.6])}, [0.2, 0.4, 0.6]),
        ("auto", {}, "last point"),  # RGB data not composited on a colour: nerfacto's last_sample
        ("auto", None, "last point"),  # a model built without metadata (nerfstudio's Model does not need it)
        ("black", {BACKGROUND_METADATA_KEY: torch.ones(3)}, [0.0, 0.0, 0.0]),  # an explicit value wins
    ],
)
def test_background_follows_the_data_unless_set(option, metadata, expected):
    """In evaluation, a ray with no opacity renders the background: the data's colour under "auto", or the colour
    at its last (farthest) point where the data name none."""
    torch.manual_seed(0)
    config = RVSMonteCarloModelConfig(**{**TINY_FIELD, "background_color": option})
    scene_box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    model = config.setup(scene_box=scene_box, num_train_data=4, **({} if metadata is None else {"metadata": metadata}))
    model.eval()
    colours = torch.rand(2, 8, 3)
    rendered = model.renderer_rgb(rgb=colours, weights=torch.zeros(2, 8, 1))
    torch.testing.assert_close(rendered, colours[:, -1] if expected == "last point" else torch.tensor([expected] * 2))


def slab_bounds(origins: np.ndarray, directions: np.ndarray, low: float, high: float):
    """Entry and exit distances of rays through the box [low, high]^3 (the slab method); a miss has entry > exit or
    exit < 0 (the box is behind)."""
    with np.errstate(divide="ignore"):
        t1, t2 = (low - origins) / directions, (high - origins) / directions
    return np.minimum(t1, t2).max(axis=-1), np.maximum(t1, t2).min(axis=-1)


WHITE = {BACKGROUND_METADATA_KEY: torch.ones(3)}


@pytest.mark.parametrize(
    "config_class, option, metadata, bounded",
    [
        (RVSMonteCarloModelConfig, "auto", WHITE, True),  # data composited on a background: the scene box
        (RVSMonteCarloModelConfig, "auto", {}, False),
        (RVSMonteCarloModelConfig, "near-far", WHITE, False),  # an explicit value wins
        (RVSNerfactoModelConfig, None, WHITE, False),  # rvs-nerfacto keeps nerfacto's near and far planes by default
        (RVSNerfactoModelConfig, "scene-box", {}, True),
    ],
)
def test_rays_end_at_the_scene_box_when_the_data_names_its_background(config_class, option, metadata, bounded):
    """Bounded rays start at the box or the near plane and end where they leave the box; a ray that misses the box
    renders the background alone."""
    torch.manual_seed(0)
    config = config_class(**TINY_FIELD, **({} if option is None else {"ray_bounds": option}), background_color="white")
    scene_box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    model = config.setup(scene_box=scene_box, num_train_data=4, metadata=metadata)
    origins = torch.tensor([[0.9, 0.2, -0.3]] * 3 + [[0.0, 0.0, -3.0]] * 3, dtype=torch.float64)
    from_outside = torch.tensor([[0.0, 0.1, 1.0], [0.2, -0.1, 1.0], [0.0, 0.0, -1.0]], dtype=torch.float64)  # 2 hit, 1 miss
    directions = torch.nn.functional.normalize(torch.cat([torch.randn(3, 3, dtype=torch.float64), from_outside]), dim=-1)

    def rays() -> RayBundle:
        return RayBundle(origins.float(), directions.float(), torch.ones(6, 1), camera_indices=torch.zeros(6, 1, dtype=torch.long))

    bundle = model.collider(rays())
    if not bounded:
        np.testing.assert_allclose(bundle.nears.numpy(), config.near_plane)
        np.testing.assert_allclose(bundle.fars.numpy(), config.far_plane)
        return
    entry, exit = slab_bounds(origins.numpy(), directions.numpy(), -1.0, 1.0)
    np.testing.assert_allclose(bundle.nears[:5, 0].numpy(), np.maximum(entry[:5], config.near_plane), atol=1e-4)
    np.testing.assert_allclose(bundle.fars[:5, 0].numpy(), exit[:5], atol=1e-4)
    assert exit[5] < 0 and bundle.fars[5, 0] - bundle.nears[5, 0] < 1e-5
    model.eval()
    with torch.no_grad():
        outputs = model(rays())
    assert outputs["accumulation"][5, 0] < 1e-4
    torch.testing.assert_close(outputs["rgb"][5], torch.ones(3), atol=1e-4, rtol=0)
    assert (outputs["expected_depth"][:5, 0] <= torch.from_numpy(exit[:5]).float() + 1e-4).all()


@pytest.mark.slow
@pytest.mark.parametrize("flags, expected", [([], [1.0, 1.0, 1.0]), (["--pipeline.model.background-color", "black"], "black")])
def test_ns_train_on_a_blender_scene_renders_on_white_unless_told(tmp_path, flags, expected):
    scene = generate_scene(SynthConfig(output=tmp_path / "lego", scene="object", layout="blender", resolution=16, num_train=3, num_test=1))
    config = train("rvs-mc", scene, tmp_path / "runs", 2, *flags)
    _, pipeline, _, _ = eval_setup(config, test_mode="test")
    background = pipeline.model.renderer_rgb.background_color
    if isinstance(expected, str):
        assert background == expected
    else:
        torch.testing.assert_close(background.cpu(), torch.tensor(expected))


def test_method_is_registered_with_its_cli_options():
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="nerfstudio.method_configs") if e.name == "rvs-mc"]
    spec = entry.load()
    assert spec.config.method_name == "rvs-mc" and spec.description
    assert spec.config.pipeline.model.num_radiance_samples == 8
    help_text = run_cli(["ns-train", "rvs-mc", "--help"], timeout=180).stdout
    for option in ("num-radiance-samples", "eval-num-radiance-samples", "eval-num-draws", "density-interpolation"):
        assert f"--pipeline.model.{option}" in help_text
    for hidden in ("num-nerf-samples-per-ray", "interlevel-loss-mult", "predict-normals", "proposal-update-every", "uniform-mixture"):
        assert f"--pipeline.model.{hidden}" not in help_text


@pytest.mark.slow
def test_short_training_raises_held_out_psnr(tiny_scene):
    from rvs_nerfstudio.method_configs import rvs_mc
    from rvs_nerfstudio.tools.runner import train

    result = train(rvs_mc.config, tiny_scene, steps=300, preset="cpu-small")
    before, after = result.evals[0].metrics["psnr"], result.evals[-1].metrics["psnr"]
    print(f"rvs-mc held-out PSNR: untrained {before:.2f} dB, after 300 steps {after:.2f} dB "
          f"({result.seconds_per_step:.3f} s/step)")
    # Untrained, rvs-mc renders the scene's white (about 10.5 dB): the bound is above the stall of the white image
    # (10.5-12.6 dB), which the old "+6 dB over the untrained render" (then on black) did not rule out.
    assert after > 14.0 and after > before + 4


@pytest.mark.slow
def test_ns_train_eval_render_end_to_end(tiny_scene, tmp_path):
    run_cli(
        ["ns-train", "rvs-mc", "--data", tiny_scene, "--output-dir", tmp_path / "runs", "--vis", "tensorboard"]
        + ["--max-num-iterations", "20", "--steps-per-save", "10"]
        + presets.cli_args("cpu-small", "rvs-mc")
        + ["--pipeline.model.num-radiance-samples", "4"]
        + ["--pipeline.model.eval-num-radiance-samples", "6", "--pipeline.model.eval-num-draws", "2"],
        timeout=600,
    )
    (config,) = (tmp_path / "runs").glob("*/rvs-mc/*/config.yml")
    assert len(list((config.parent / "nerfstudio_models").glob("*.ckpt"))) >= 1

    output = tmp_path / "metrics.json"
    run_cli(["ns-eval", "--load-config", config, "--output-path", output], timeout=300)
    metrics = json.loads(output.read_text())["results"]
    print("ns-eval:", json.dumps(metrics))
    assert math.isfinite(metrics["psnr"]) and 5 < metrics["psnr"] < 60
    assert math.isfinite(metrics["ssim"]) and 0 < metrics["ssim"] <= 1
    assert metrics["radiance_evals_per_ray"] == 12
    assert metrics["num_rays_per_sec"] > 0

    run_cli(
        ["ns-render", "dataset", "--load-config", config, "--output-path", tmp_path / "renders"]
        + ["--split", "test", "--rendered-output-names", "rgb", "depth", "expected_depth"],
        timeout=300,
    )
    images = sorted((tmp_path / "renders").rglob("*.png")) + sorted((tmp_path / "renders").rglob("*.jpg"))
    assert len(images) == 9, images


def level_quantiles(model, ray_bundle):
    """Per density level after the first, the quantiles of its bin edges under the level before's padded spline,
    and the quantiles of the K radiance points under the last level's unpadded spline (all rebuilt in numpy)."""
    interpolation = model.config.density_interpolation
    bundle = model.collider(ray_bundle[:16])
    with torch.no_grad():
        points, _, levels = model.proposal_sampler(bundle, density_fns=model.density_fns)
    levels = levels[: model.config.num_proposal_iterations]  # the appended last entry is the spline's intervals
    densities = [fn(level.frustums.get_positions()) for fn, level in zip(model.density_fns, levels)]
    padding = model.config.density_padding
    resampled = [resampled_quantiles(levels[i], densities[i], padding, levels[i + 1], interpolation) for i in range(len(levels) - 1)]
    return resampled, resampled_quantiles(levels[-1], densities[-1], 0.0, points, interpolation)


@pytest.mark.parametrize("interpolation", ["linear", "constant"])
def test_levels_and_points_are_midpoint_quantiles_in_evaluation(ray_bundle, interpolation):
    """In evaluation the second level's 17 edges are the quantiles (k + 1/2) / 17 of the first level's padded spline,
    and the K = 6 radiance points the quantiles (k + 1/2) / 6 of the last level's spline without padding."""
    model = build_model(RVSMonteCarloModelConfig, eval_num_radiance_samples=6, density_interpolation=interpolation,
                        density_padding=0.5).eval()
    (level_two,), points = level_quantiles(model, ray_bundle)
    np.testing.assert_allclose(level_two, np.broadcast_to((np.arange(17) + 0.5) / 17, level_two.shape), atol=2e-4)
    np.testing.assert_allclose(points, np.broadcast_to((np.arange(6) + 0.5) / 6, points.shape), atol=2e-4)


@pytest.mark.parametrize("single_jitter", [True, False])
def test_proposal_levels_jitter_follows_use_single_jitter(ray_bundle, single_jitter):
    """nerfacto's use-single-jitter reaches rvs-mc's resampling levels: one jitter per ray, or one per edge."""
    model = build_model(RVSMonteCarloModelConfig, use_single_jitter=single_jitter).train()
    torch.manual_seed(0)
    (level_two,), _ = level_quantiles(model, ray_bundle)
    fraction = level_two * 17 - np.arange(17)
    spread = fraction.max(-1) - fraction.min(-1)
    assert (spread.max() < 2e-3) if single_jitter else (np.median(spread) > 0.4)


def test_render_k_below_one_is_refused_in_one_line():
    model = build_model(RVSMonteCarloModelConfig)
    with pytest.raises(ValueError, match=r"^K must be at least 1 \(got 0\)\.$"):
        model.set_eval_num_radiance_samples(0)


def test_render_k_of_one_is_allowed_and_the_slider_reaches_the_configured_k(ray_bundle):
    """K = 1 is the smallest K, in the config and from the viewer; the slider goes to 64, or to K if that is larger."""
    model = build_model(RVSMonteCarloModelConfig, num_radiance_samples=1, eval_num_radiance_samples=1).eval()
    model.set_eval_num_radiance_samples(1)
    calls = count_radiance_points(model)
    with torch.no_grad():
        model(ray_bundle)
    assert calls == [len(ray_bundle)]
    assert model.viewer_radiance_samples.max == 64
    assert build_model(RVSMonteCarloModelConfig, eval_num_radiance_samples=100).viewer_radiance_samples.max == 100


def test_training_points_come_from_the_padded_spline_only_in_training():
    """With training padding the weights vary per point and their sum averages y_f; with padding 0 every weight is
    y_f / K, and at evaluation every weight is the same."""
    torch.manual_seed(0)
    model = fixed_spline_model(4, training_padding=1.0)

    def weights(model) -> torch.Tensor:
        with torch.no_grad():
            points = model.proposal_sampler(model.collider(one_ray(4000)), density_fns=model.density_fns)[0]
        return points.metadata["point_weights"][..., 0].double()

    padded, plain = weights(model), weights(fixed_spline_model(4, training_padding=0.0))
    y_f = 4 * plain[0, 0].item()
    assert 0.5 < y_f < 0.99 and padded.std() > 0.05 * y_f / 4
    assert abs(padded.sum(-1).mean().item() - y_f) < 4 * padded.sum(-1).std().item() / np.sqrt(4000)
    np.testing.assert_allclose(plain.numpy(), y_f / 4, rtol=1e-5)
    evaluated = weights(model.eval())
    np.testing.assert_allclose(evaluated.numpy(), evaluated[0, 0].item(), rtol=1e-5)  # no padding in evaluation
