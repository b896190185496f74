"""``rvs-nerfacto``: nerfacto whose proposal sampler is reparameterized volume sampling (RVS).

Nerfacto trains its proposal density networks only through the auxiliary interlevel loss, because
nerfstudio's ``PDFSampler`` detaches the sample positions. Here every proposal level resamples with the
reparameterized inverse CDF of a density spline (Morozov et al., AISTATS 2024, §3), so the photometric
loss reaches every proposal network at every step and the interlevel loss is gone. Fields, renderers,
camera optimizer and the main quadrature are nerfacto's own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Tuple, Type

import torch
from tyro.conf import Suppress

from nerfstudio.cameras.rays import RayBundle, RaySamples
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.model_components.scene_colliders import AABBBoxCollider
from nerfstudio.models.nerfacto import NerfactoModel, NerfactoModelConfig
from rvs_nerfstudio.data.parsers import BACKGROUND_METADATA_KEY
from rvs_nerfstudio.engine.compat import OptionalLPIPSMixin, flush_denormals, with_fast_hash_lookups
from rvs_nerfstudio.engine.trainer import FiniteLossGuard
from rvs_nerfstudio.samplers.proposal import RVSProposalSampler


class ImpossibleOptions(SystemExit, ValueError):
    """Model options that cannot be honoured together. A ``ValueError`` to callers; uncaught (``ns-train``,
    ``rvs-bench``), Python prints its one-line message and exits with status 1 instead of a traceback."""


@dataclass
class RVSNerfactoModelConfig(NerfactoModelConfig):
    """Nerfacto with RVS proposal sampling and no interlevel loss."""

    _target: Type = field(default_factory=lambda: RVSNerfactoModel)
    density_interpolation: Literal["linear", "constant"] = "linear"
    """Density spline between proposal samples: "linear" (the paper's default) or "constant"."""
    density_padding: float = 2.0
    """Optical depth per unit of normalised ray spacing added before each resampling, so part of the samples
    always covers the whole ray (the role of PDFSampler's histogram padding)."""
    gradient_floor: float = 0.5
    """Where a level's sampling density is below this share of uniform (in normalised spacing), a sample's gradient is
    scaled by their ratio: it bounds how far samples in sparsely sampled stretches move when the proposal densities
    change (``rvs_nerfstudio.core.spline.sample``; 0: the exact gradient). 0.5 stops the late collapses (README,
    "Decisions worth knowing"). Not used with uniform-mixture above 0."""
    uniform_mixture: float = 0.0
    """Share of each level's samples drawn uniformly over the ray (in nerfacto's spacing); the others fall in the
    intervals of the padded density spline with their termination probability, uniformly within each interval, as in
    PDFSampler (``rvs_nerfstudio.core.spline.sample_mixture``: one closed-form, differentiable inverse CDF for both; its
    gradients are bounded, so gradient-floor is not used). 0: the spline's exact inverse CDF, as in the paper. Off by
    default: 0.5 (with density-padding 0) learned faster on every scene class but ended level with the default on the
    unbounded scene at the cpu-long budget (README, "Decisions worth knowing")."""
    use_distortion_loss: bool = False
    """Add nerfacto's distortion loss (times distortion-loss-mult) on the radiance field's weights. As in nerfacto it
    trains the field: it is computed with the samples' positions and widths detached, so it sharpens the field's
    density without pulling the samples together (with their gradient it bunched them up; README, "Decisions worth
    knowing"). Off by default: it slowed the object scene's start at the cpu-long budget."""
    average_init_density: float = 0.01
    """Average initial density output from the MLPs (nerfacto's method-level setting)."""
    ray_bounds: Literal["auto", "near-far", "scene-box"] = "near-far"
    """Where rays start and end. "near-far": at near-plane and far-plane, as in nerfacto (far space, contracted, can
    hold the background). "scene-box": where each ray enters and leaves the data's scene box; beyond it there is only
    the background colour. "auto": the scene box when the data parser names the background the images were
    composited on (Blender scenes; RGB images with one plain border colour), else near-far."""
    proposal_update_every: int = 0
    """Train the proposal networks on nerfacto's schedule: with a gradient on every step of the first 10, then once
    more than this many steps have passed since they last had one (reached over proposal-warmup steps); on the other
    steps their samples are placed without a gradient, as nerfacto's are, and the step costs about what nerfacto's
    does. 0: with a gradient on every step (the paper's)."""
    proposal_warmup: int = 5000
    """Steps over which proposal-update-every is reached (nerfacto's meaning)."""
    use_proposal_weight_anneal: bool = False
    """Nerfacto's proposal-weight anneal, with its slope and its steps (proposal-weights-anneal-slope 10,
    -max-num-iters 1000): in training each level's padded density spline is scaled by nerfacto's anneal factor, which
    rises from 0 to 1 over those steps, so sampling starts uniform in nerfacto's spacing and gathers on the proposals'
    density as they learn. Off by default: at the longer budget it gained on the object scene and lost on the
    forward-facing one (README, "What the proposals' learning adds")."""
    # The interlevel loss has no meaning with RVS: fixed and hidden from the CLI.
    interlevel_loss_mult: Suppress[float] = 0.0


class RVSNerfactoModel(OptionalLPIPSMixin, NerfactoModel):
    """Nerfacto with :class:`~rvs_nerfstudio.samplers.proposal.RVSProposalSampler` in place of its proposal sampler."""

    config: RVSNerfactoModelConfig

    def populate_modules(self) -> None:
        self._validate_config()
        flush_denormals()
        super().populate_modules()
        self.loss_guard = FiniteLossGuard()
        self.density_fns = [with_fast_hash_lookups(fn, self.proposal_networks) for fn in self.density_fns]
        self.proposal_sampler = RVSProposalSampler(
            num_proposal_samples_per_ray=self.config.num_proposal_samples_per_ray,
            num_nerf_samples_per_ray=self.config.num_nerf_samples_per_ray,
            single_jitter=self.config.use_single_jitter,
            interpolation=self.config.density_interpolation,
            density_padding=self.config.density_padding,
            initial_sampler=self.proposal_sampler.initial_sampler,
            # Nerfacto's own schedule function, built by NerfactoModel from the same two options.
            update_sched=self.proposal_sampler.update_sched if self.config.proposal_update_every > 0 else None,
            gradient_floor=self.config.gradient_floor,
            uniform_mixture=self.config.uniform_mixture,
        )
        if self.bounded_by_scene_box():
            self.collider = AABBBoxCollider(self.scene_box, near_plane=self.config.near_plane)

    def data_background(self) -> Optional[torch.Tensor]:
        """The colour [3] the data parser says the images were composited on, or None."""
        return self.kwargs.get("metadata", {}).get(BACKGROUND_METADATA_KEY)

    def bounded_by_scene_box(self) -> bool:
        """Whether rays end at the scene box (``ray_bounds``, with "auto" resolved from the data)."""
        if self.config.ray_bounds == "auto":
            return self.data_background() is not None
        return self.config.ray_bounds == "scene-box"

    def _validate_config(self) -> None:
        """Rejects option combinations that RVS sampling cannot honour, with a message saying what to change."""
        config = self.config
        if len(config.num_proposal_samples_per_ray) != config.num_proposal_iterations:
            raise ImpossibleOptions(
                f"num-proposal-samples-per-ray has {len(config.num_proposal_samples_per_ray)} entries but "
                f"num-proposal-iterations is {config.num_proposal_iterations}: give one count per proposal level."
            )
        counts = self.level_sample_counts()
        if min(counts, default=1) < 1:
            raise ImpossibleOptions("Sample counts must be at least 1 per ray.")
        if any(coarse < fine for coarse, fine in zip(counts, counts[1:])):
            raise ImpossibleOptions(
                f"Sample counts per level {counts} must not grow from one level to the next (each level is resampled "
                "from the one before): e.g. num-proposal-samples-per-ray 256 96 and num-nerf-samples-per-ray 48."
            )
        if min(config.proposal_update_every, config.proposal_warmup) < 0:
            raise ImpossibleOptions("proposal-update-every and proposal-warmup must be at least 0 (proposal-update-every 0: every step).")
        if not 0 <= config.uniform_mixture < 1:
            raise ImpossibleOptions(f"uniform-mixture ({config.uniform_mixture}) must be within [0, 1) (0: sample the padded spline alone).")
        if not 0 <= config.gradient_floor <= 1:
            raise ImpossibleOptions(f"gradient-floor ({config.gradient_floor}) must be within [0, 1] (0: exact sample gradients).")
        if not 0 <= config.near_plane < config.far_plane:
            raise ImpossibleOptions(f"near-plane ({config.near_plane}) must be non-negative and below far-plane ({config.far_plane}).")
        if config.predict_normals:
            raise ImpossibleOptions("predict-normals is not supported by rvs-nerfacto yet; leave it False.")

    def level_sample_counts(self) -> Tuple[int, ...]:
        """Samples per ray at each level, coarse to fine: the proposal levels, then the radiance field."""
        return (*self.config.num_proposal_samples_per_ray, self.config.num_nerf_samples_per_ray)

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        """Nerfacto's callbacks (with use-proposal-weight-anneal, its anneal and the sampler's step counter), plus one
        that tells the loss guard the step and, without the anneal, the step counter for the proposal schedule."""
        callbacks = super().get_training_callbacks(training_callback_attributes)
        callbacks.append(TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], self.loss_guard.set_step))
        if not self.config.use_proposal_weight_anneal:  # else nerfacto's callbacks count the steps already
            callbacks.append(TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], self.proposal_sampler.step_cb))
        return callbacks

    def get_outputs(self, ray_bundle: RayBundle) -> Dict[str, torch.Tensor | List]:
        """Nerfacto's outputs. With the distortion loss, in training, the last entries of ``weights_list`` and
        ``ray_samples_list`` (read only by nerfacto's distortion metric) are the radiance field's weights on its samples
        with positions and widths detached: the loss then reaches the field's density and not the proposals."""
        if not (self.training and self.config.use_distortion_loss):
            return super().get_outputs(ray_bundle)
        kept: Dict[str, Any] = {}
        field_forward = self.field.forward

        def forward_keeping_density(ray_samples: RaySamples, compute_normals: bool = False) -> Dict:
            outputs = field_forward(ray_samples, compute_normals=compute_normals)
            kept.update(samples=ray_samples, density=outputs[FieldHeadNames.DENSITY])
            return outputs

        self.field.forward = forward_keeping_density
        try:
            outputs = super().get_outputs(ray_bundle)
        finally:
            del self.field.forward  # the class's own forward again
        samples = kept["samples"]
        frustums = samples.frustums
        fixed = dataclasses.replace(
            samples,
            frustums=dataclasses.replace(frustums, starts=frustums.starts.detach(), ends=frustums.ends.detach()),
            deltas=samples.deltas.detach(),
            spacing_starts=samples.spacing_starts.detach(),
            spacing_ends=samples.spacing_ends.detach(),
        )
        outputs["weights_list"][-1] = fixed.get_weights(kept["density"])
        outputs["ray_samples_list"][-1] = fixed
        return outputs

    def get_loss_dict(
        self, outputs: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor], metrics_dict: Optional[Dict] = None
    ) -> Dict[str, torch.Tensor]:
        """RGB loss, optional distortion loss and the camera-optimizer loss; no interlevel loss.

        In training, a non-finite loss stops the run (:class:`~rvs_nerfstudio.engine.trainer.FiniteLossGuard`) before
        it is back-propagated.
        """
        pred_rgb, gt_rgb = self.renderer_rgb.blend_background_for_loss_computation(
            pred_image=outputs["rgb"], pred_accumulation=outputs["accumulation"], gt_image=batch["image"].to(self.device)
        )
        loss_dict = {"rgb_loss": self.rgb_loss(gt_rgb, pred_rgb)}
        if self.training:
            if self.config.use_distortion_loss:
                assert metrics_dict is not None and "distortion" in metrics_dict
                loss_dict["distortion_loss"] = self.config.distortion_loss_mult * metrics_dict["distortion"]
            self.camera_optimizer.get_loss_dict(loss_dict)
            self.loss_guard.check(loss_dict)
        return loss_dict
