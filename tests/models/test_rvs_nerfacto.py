"""The ``rvs-nerfacto`` model on CPU: proposal gradients, distortion switch, pose gradients, options."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch

from nerfstudio.engine.callbacks import TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.models.nerfacto import NerfactoModel
from rvs_nerfstudio.engine.trainer import TrainingStopped
from rvs_nerfstudio.models.rvs_mc import RVSMonteCarloModelConfig
from rvs_nerfstudio.models.rvs_nerfacto import RVSNerfactoModelConfig
from rvs_nerfstudio.samplers.proposal import along_rays
from tests.helpers import OfflineNerfactoConfig, autograd_node_names, build_model, resampled_quantiles, training_pass


def distortion_of_field_weights(outputs) -> float:
    """mip-NeRF 360's distortion of the radiance field's weights over its bins in spacing coordinates, written
    out from its definition: sum_ij w_i w_j |m_i - m_j| + sum_i w_i^2 (s_i+1 - s_i) / 3, averaged over rays."""
    samples, weights = outputs["ray_samples_list"][-1], outputs["weights_list"][-1][..., 0].double()
    starts, ends = samples.spacing_starts[..., 0].double(), samples.spacing_ends[..., 0].double()
    midpoints = (starts + ends) / 2
    inter = torch.einsum("ri,rj,rij->r", weights, weights, (midpoints[:, :, None] - midpoints[:, None, :]).abs())
    intra = (weights**2 * (ends - starts)).sum(-1) / 3
    return (inter + intra).mean().item()


def proposal_grad_norms(model):
    return [
        sum(p.grad.abs().sum().item() for p in net.parameters() if p.grad is not None)
        for net in model.proposal_networks
    ]


def test_rgb_loss_alone_trains_every_proposal_network(ray_bundle):
    model = build_model(RVSNerfactoModelConfig)
    losses = training_pass(model, ray_bundle)[1]
    assert "interlevel_loss" not in losses
    assert set(losses) == {"rgb_loss", "camera_opt_regularizer"}
    losses["rgb_loss"].backward()
    norms = proposal_grad_norms(model)
    print("proposal-network gradient L1 norms from the RGB loss:", norms)
    assert len(norms) == 2 and all(n > 0 for n in norms)


@pytest.mark.parametrize(
    "config_class", [RVSNerfactoModelConfig, RVSMonteCarloModelConfig], ids=["rvs-nerfacto", "rvs-mc"]
)
def test_proposal_networks_look_up_their_hash_tables_fast_with_nerfstudios_gradients(ray_bundle, config_class):
    """Each proposal network's torch hash grid looks its table up with the fast lookup (8 corners per network) in a
    training pass, and the proposal networks' gradients equal those of the same model with nerfstudio's own lookups."""
    fast = build_model(config_class)
    plain = build_model(config_class)
    plain.density_fns = [network.density_fn for network in plain.proposal_networks]
    gradients = []
    for model in (fast, plain):
        torch.manual_seed(5)
        loss = training_pass(model, copy.deepcopy(ray_bundle))[1]["rgb_loss"]  # the pass moves the bundle's rays
        nodes = autograd_node_names(loss)
        loss.backward()
        gradients.append([p.grad for network in model.proposal_networks for p in network.parameters()])
        assert nodes["_HashTableLookupBackward"] == (16 if model is fast else 0), nodes
    for fast_grad, plain_grad in zip(*gradients):
        torch.testing.assert_close(fast_grad, plain_grad)
    assert all(grad.abs().sum() > 0 for grad in gradients[0])


def test_nerfacto_proposals_get_no_rgb_gradient(ray_bundle):
    """The reference point: nerfstudio's PDF sampler detaches positions, so the same check fails there."""
    model = build_model(OfflineNerfactoConfig)
    training_pass(model, ray_bundle)[1]["rgb_loss"].backward()
    assert proposal_grad_norms(model) == [0, 0]


def test_distortion_loss_switch_adds_nerfacto_distortion_on_the_field_samples(ray_bundle):
    """Off by default; switched on, it is nerfacto's mip-NeRF 360 distortion of the radiance field's weights."""
    model = build_model(RVSNerfactoModelConfig, use_distortion_loss=True)
    outputs, losses = training_pass(model, ray_bundle)
    assert set(losses) == {"rgb_loss", "distortion_loss", "camera_opt_regularizer"}
    expected = model.config.distortion_loss_mult * distortion_of_field_weights(outputs)
    assert losses["distortion_loss"].item() == pytest.approx(expected, rel=1e-5)
    assert losses["distortion_loss"].item() > 0


@pytest.mark.parametrize("seed", [4, 5])
def test_distortion_loss_sharpens_the_field_without_pulling_the_samples_together(ray_bundle, seed):
    """The distortion loss is computed on the field's weights (they sum to the rendered accumulation) with the
    samples' positions and widths held fixed: it trains the field as much as nerfacto's own computation on the same
    outputs does, and reaches the proposal networks only through the field's density slope at the samples (under 1 %
    of what they get from nerfacto's computation, where the loss moves the samples)."""
    norms = {}
    for held_fixed in (True, False):
        model = build_model(RVSNerfactoModelConfig, use_distortion_loss=True)
        with torch.no_grad():  # proposal densities that vary in space, so that the samples' placement matters
            for parameter in model.proposal_networks.parameters():
                parameter.normal_(generator=torch.Generator().manual_seed(seed))
        if not held_fixed:  # nerfstudio's own NerfactoModel.get_outputs: the samples keep their gradient
            model.get_outputs = lambda bundle, model=model: NerfactoModel.get_outputs(model, bundle)
        outputs, losses = training_pass(model, copy.deepcopy(ray_bundle))
        torch.testing.assert_close(outputs["weights_list"][-1].sum(-2), outputs["accumulation"])
        assert outputs["ray_samples_list"][-1].spacing_starts.requires_grad is not held_fixed
        losses["distortion_loss"].backward()
        field = sum(p.grad.abs().sum().item() for p in model.field.parameters() if p.grad is not None)
        norms[held_fixed] = (proposal_grad_norms(model), field)
    print("proposal and field gradient L1 norms, held fixed / moving:", norms)
    (fixed_proposals, fixed_field), (moving_proposals, moving_field) = norms[True], norms[False]
    assert all(0 < moving for moving in moving_proposals)
    assert all(fixed < 0.01 * moving for fixed, moving in zip(fixed_proposals, moving_proposals))
    assert fixed_field == pytest.approx(moving_field, rel=1e-4)
    assert model.field.forward.__func__ is type(model.field).forward  # the field's own forward again


def test_poses_learn_through_the_radiance_field_samples_only(ray_bundle, monkeypatch):
    """The camera optimizer's RGB gradient is the one with the radiance field's sample distances held fixed (as
    in nerfacto), while those distances still carry the proposal networks' gradient."""
    model = build_model(RVSNerfactoModelConfig)
    with torch.no_grad():  # proposal densities that vary in space, so that sample placement depends on the pose
        for parameter in model.proposal_networks.parameters():
            parameter.normal_(generator=torch.Generator().manual_seed(4))

    def camera_gradient():
        model.zero_grad()
        torch.manual_seed(5)  # the same stratification jitter in every pass
        training_pass(model, copy.deepcopy(ray_bundle))[1]["rgb_loss"].backward()
        return model.camera_optimizer.pose_adjustment.grad.clone()

    gradient = camera_gradient()
    assert all(n > 0 for n in proposal_grad_norms(model))
    generate = model.proposal_sampler.generate_ray_samples

    def distances_held_fixed(bundle, density_fns):
        samples, weights_list, samples_list = generate(bundle, density_fns)
        starts, ends = samples.spacing_starts[..., 0].detach(), samples.spacing_ends[..., 0].detach()
        return along_rays(bundle, samples, starts, ends), weights_list, samples_list

    monkeypatch.setattr(model.proposal_sampler, "generate_ray_samples", distances_held_fixed)
    reference = camera_gradient()
    assert proposal_grad_norms(model) == [0, 0]
    assert gradient.abs().sum() > 0
    torch.testing.assert_close(gradient, reference, rtol=1e-5, atol=1e-9)


def test_eval_render_is_deterministic(ray_bundle):
    model = build_model(RVSNerfactoModelConfig).eval()
    with torch.no_grad():
        first, second = model(ray_bundle), model(ray_bundle)
    torch.testing.assert_close(first["rgb"], second["rgb"], rtol=0, atol=0)
    assert torch.isfinite(first["depth"]).all() and torch.isfinite(first["prop_depth_0"]).all()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(num_proposal_samples_per_ray=(32,)), "one count per proposal level"),
        (dict(num_nerf_samples_per_ray=0), "at least 1"),
        (dict(predict_normals=True), "predict-normals"),
        (dict(num_proposal_samples_per_ray=(16, 32)), "must not grow from one level to the next"),
        (dict(num_nerf_samples_per_ray=64), "must not grow from one level to the next"),
        (dict(near_plane=2.0, far_plane=1.0), "below far-plane"),
        (dict(near_plane=1.0, far_plane=1.0), "below far-plane"),
        (dict(near_plane=-0.1), "must be non-negative"),
        (dict(gradient_floor=-0.1), r"gradient-floor \(-0.1\) must be within \[0, 1\]"),
        (dict(gradient_floor=2.0), "gradient-floor"),
        (dict(uniform_mixture=1.0), r"uniform-mixture \(1.0\) must be within \[0, 1\)"),
        (dict(uniform_mixture=-0.5), "uniform-mixture"),
    ],
)
def test_impossible_options_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        build_model(RVSNerfactoModelConfig, **overrides)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(num_proposal_samples_per_ray=(1, 1), num_nerf_samples_per_ray=1),  # one sample per level is enough
        dict(num_proposal_samples_per_ray=(16, 16), num_nerf_samples_per_ray=16),  # counts may stay equal
        dict(near_plane=0.0),
        dict(uniform_mixture=0.0, density_padding=0.0),  # the spline alone, unpadded
        dict(uniform_mixture=0.99),
    ],
)
def test_options_at_the_limits_are_accepted(overrides, ray_bundle):
    model = build_model(RVSNerfactoModelConfig, **overrides).eval()
    with torch.no_grad():
        assert torch.isfinite(model(ray_bundle)["rgb"]).all()


def last_level_quantiles(model, ray_bundle, interpolation="linear", scale=1.0):
    """Quantiles of the radiance field's bin edges under the last proposal level's padded spline (times ``scale``), in
    numpy."""
    bundle = model.collider(ray_bundle[:16])
    with torch.no_grad():
        samples, _, levels = model.proposal_sampler(bundle, density_fns=model.density_fns)
        density = model.density_fns[-1](levels[-1].frustums.get_positions())
    config = model.config
    return resampled_quantiles(levels[-1], density, config.density_padding, samples, interpolation, scale, config.uniform_mixture)


@pytest.mark.parametrize("interpolation", ["linear", "constant"])
@pytest.mark.parametrize("options", [dict(density_padding=0.5), dict(uniform_mixture=0.5, density_padding=0.0), dict(uniform_mixture=0.3, density_padding=0.5)])
def test_radiance_samples_are_midpoint_quantiles_of_the_last_proposal_spline(ray_bundle, interpolation, options):
    """In evaluation the 9 edges of the 8 radiance bins are the quantiles (k + 1/2) / 9 of the last proposal level's
    spline (the model's interpolation and padding), or with uniform-mixture of that spline's interval histogram mixed
    with the uniform, rebuilt in numpy from that level's samples and density."""
    model = build_model(RVSNerfactoModelConfig, density_interpolation=interpolation, **options).eval()
    u = last_level_quantiles(model, ray_bundle, interpolation)
    np.testing.assert_allclose(u, np.broadcast_to((np.arange(9) + 0.5) / 9, u.shape), atol=2e-4)


@pytest.mark.parametrize("single_jitter", [True, False])
def test_training_jitter_follows_use_single_jitter(ray_bundle, single_jitter):
    """nerfacto's use-single-jitter (default True): one jitter per ray for every edge, or one per edge."""
    model = build_model(RVSNerfactoModelConfig, use_single_jitter=single_jitter).train()
    torch.manual_seed(0)
    fraction = last_level_quantiles(model, ray_bundle) * 9 - np.arange(9)
    assert (fraction > -1e-3).all() and (fraction < 1 + 1e-3).all()
    spread = fraction.max(-1) - fraction.min(-1)
    assert (spread.max() < 2e-3) if single_jitter else (np.median(spread) > 0.4)


@pytest.mark.parametrize("step", [0, 100, 400, 1000])
def test_proposal_weight_anneal_scales_the_spline_in_training_on_nerfactos_schedule(ray_bundle, step):
    """nerfacto's use-proposal-weight-anneal, driven by nerfacto's own callback: in training at ``step`` the radiance
    edges are single-jittered quantiles of the last level's padded spline times nerfacto's anneal factor
    b x / ((b - 1) x + 1), b = 10, x = step / 1000 (0 at step 0: uniform in spacing); evaluation follows the spline."""
    model = build_model(RVSNerfactoModelConfig, use_proposal_weight_anneal=True)
    attributes = TrainingCallbackAttributes(optimizers=None, grad_scaler=None, pipeline=None, trainer=None)
    for callback in model.get_training_callbacks(attributes):
        callback.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
    x = step / 1000
    anneal = 10 * x / (9 * x + 1)
    torch.manual_seed(0)
    fraction = last_level_quantiles(model.train(), ray_bundle, scale=anneal) * 9 - np.arange(9)
    assert (fraction > -1e-3).all() and (fraction < 1 + 1e-3).all()
    assert (fraction.max(-1) - fraction.min(-1)).max() < 2e-3  # one jitter per ray: the same fraction for every edge
    if step < 1000:  # the unscaled spline does not give these edges
        torch.manual_seed(0)
        unscaled = last_level_quantiles(model, ray_bundle) * 9 - np.arange(9)
        assert (unscaled.max(-1) - unscaled.min(-1)).max() > 0.05
    u = last_level_quantiles(model.eval(), ray_bundle)
    np.testing.assert_allclose(u, np.broadcast_to((np.arange(9) + 0.5) / 9, u.shape), atol=2e-4)


@pytest.mark.parametrize("model_name", ["rvs-nerfacto", "rvs-mc"])
def test_uniform_initial_sampler_option_is_honoured(ray_bundle, model_name):
    """nerfacto's proposal-initial-sampler "uniform": the first level's bins are equally wide in distance."""
    from rvs_nerfstudio.models.rvs_mc import RVSMonteCarloModelConfig

    config_class = RVSNerfactoModelConfig if model_name == "rvs-nerfacto" else RVSMonteCarloModelConfig
    model = build_model(config_class, proposal_initial_sampler="uniform").eval()
    bundle = model.collider(ray_bundle)
    with torch.no_grad():
        _, _, levels = model.proposal_sampler(bundle, density_fns=model.density_fns)
    widths = (levels[0].frustums.ends - levels[0].frustums.starts)[..., 0]
    expected = (bundle.fars - bundle.nears) / 32
    torch.testing.assert_close(widths, expected.expand_as(widths), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("config_class", [RVSNerfactoModelConfig, RVSMonteCarloModelConfig])
def test_training_callbacks_tell_the_loss_guard_each_step_before_its_iteration(ray_bundle, config_class):
    """The trainer runs the callbacks around each iteration; a non-finite loss then names the step it happened in."""
    model = build_model(config_class)
    attributes = TrainingCallbackAttributes(optimizers=None, grad_scaler=None, pipeline=None, trainer=None)
    callbacks = model.get_training_callbacks(attributes)

    def run_callbacks(step: int, location: TrainingCallbackLocation) -> None:
        for callback in callbacks:
            callback.run_callback_at_location(step, location=location)

    run_callbacks(6, TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
    finite_loss = sum(loss.item() for loss in training_pass(model, ray_bundle)[1].values())
    run_callbacks(6, TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
    run_callbacks(7, TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
    with pytest.raises(TrainingStopped) as stopped:
        training_pass(model, ray_bundle, target=torch.full((3,), float("nan")))
    found = re.match(r"Training stopped at step 7: rgb_loss is not finite \(the last finite loss was (\S+) at step 6\)",
                     str(stopped.value))
    assert found, stopped.value
    assert float(found.group(1)) == pytest.approx(finite_loss, rel=1e-5)


def nerfacto_update_schedule(step: int, update_every: int, warmup: int) -> float:
    """Nerfacto's proposal schedule as its docs state it: from 1 at step 0 to update_every at warmup, at least 1."""
    return float(np.clip(step / warmup * update_every, 1, update_every))


@pytest.mark.parametrize("anneal", [False, True])  # with the anneal, nerfacto's own callbacks count the steps
def test_proposal_schedule_option_trains_the_proposals_on_nerfactos_steps(ray_bundle, anneal):
    default = build_model(RVSNerfactoModelConfig)
    assert default.proposal_sampler.update_sched is None  # every step
    model = build_model(RVSNerfactoModelConfig, proposal_update_every=5, proposal_warmup=1000, use_proposal_weight_anneal=anneal)
    for step in (0, 100, 400, 999, 1000, 5000):
        assert model.proposal_sampler.update_sched(step) == pytest.approx(nerfacto_update_schedule(step, 5, 1000))
    attributes = TrainingCallbackAttributes(optimizers=None, grad_scaler=None, pipeline=None, trainer=None)
    callbacks = model.get_training_callbacks(attributes)

    def train_step(step: int) -> list:
        """Proposal-network gradient norms of the RGB loss at ``step``, after the trainer's callbacks."""
        model.zero_grad()
        for callback in callbacks:
            callback.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        training_pass(model, copy.deepcopy(ray_bundle))[1]["rgb_loss"].backward()  # the camera optimizer moves the rays
        for callback in callbacks:
            callback.run_callback_at_location(step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
        return proposal_grad_norms(model)

    learned = [all(norm > 0 for norm in train_step(step)) for step in range(5000, 5013)]
    assert learned == [True] + [False] * 5 + [True] + [False] * 5 + [True]  # every 6th step, as nerfacto's sampler
    field_grads = [p.grad for p in model.field.parameters() if p.grad is not None]
    assert field_grads and any(g.abs().sum() > 0 for g in field_grads)


def test_negative_proposal_schedule_is_rejected():
    with pytest.raises(ValueError, match="proposal-update-every and proposal-warmup must be at least 0"):
        build_model(RVSNerfactoModelConfig, proposal_update_every=-1)
