"""``rvs-mc``: Monte Carlo volume rendering with K radiance-field calls per ray.

The first use of reparameterized volume sampling in Morozov et al., *Differentiable Rendering with
Reparameterized Volume Sampling*, AISTATS 2024 (arXiv:2302.10970). Geometry comes only from cheap density
networks (nerfacto's proposal networks: hash grid and a tiny MLP). Their RVS levels end in a density spline
per ray, from which K points :math:`t_k` are drawn with the reparameterized, stratified inverse CDF. The
radiance field runs at those K points only, and the pixel colour is the unbiased estimate

.. math:: \\hat C = y_f \\cdot \\frac{1}{K} \\sum_k c(t_k) + (1 - y_f)\\, c_{bg}

of the spline's volume-rendered colour (:math:`y_f` is the ray's total opacity). Nerfstudio's ``RGBRenderer``
computes exactly this when every point has weight :math:`y_f / K`, so its background options apply as they
are; with "last_sample", :math:`c_{bg}` is the colour at the last (farthest) point, as in nerfacto. Gradients of
the photometric loss reach every density network through :math:`y_f` and through the positions :math:`t_k`;
there is no interlevel loss.

In training the K points are drawn from the spline with ``training_padding`` added (q) and weighted by
:math:`p(t_k) / (K\\, q(t_k))` instead of :math:`y_f / K`: the same colour in expectation, and every point also
gives the density there a gradient. Without it, far space, which starts with most of the opacity, keeps the points
and the image gets painted on a far shell (README, "Decisions worth knowing"). Evaluation draws from the spline
itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Tuple, Type

from torch import Tensor
from tyro.conf import Suppress

from nerfstudio.cameras.rays import RayBundle
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.model_components.renderers import BackgroundColor, RGBRenderer
from nerfstudio.viewer.viewer_elements import ViewerSlider
from rvs_nerfstudio.models.rvs_nerfacto import ImpossibleOptions, RVSNerfactoModel, RVSNerfactoModelConfig
from rvs_nerfstudio.samplers.monte_carlo import RVSMonteCarloSampler

VIEWER_MAX_RADIANCE_SAMPLES = 64
"""Upper end of the viewer's K slider (the slider reaches the configured K if that is larger)."""

@dataclass
class RVSMonteCarloModelConfig(RVSNerfactoModelConfig):
    """Monte Carlo rendering with RVS: density networks for geometry, the radiance field at K points per ray."""

    _target: Type = field(default_factory=lambda: RVSMonteCarloModel)
    num_proposal_samples_per_ray: Tuple[int, ...] = (128, 96)
    """Points per ray at each density level: nerfacto's 256 + 96 with the first level halved. The density levels took
    three quarters of the render time, so K alone saved little; the last level's spline keeps its resolution (fewer
    points there cost quality on objects; README, "Decisions worth knowing")."""
    num_radiance_samples: int = 8
    """K in training: radiance-field evaluations per ray, at stratified reparameterized draws from the density spline."""
    eval_num_radiance_samples: Optional[int] = None
    """K for evaluation and rendering; None uses num-radiance-samples."""
    eval_num_draws: int = 1
    """Independent draws of K points averaged per pixel at evaluation (1: deterministic midpoints; more: fixed seed)."""
    training_padding: float = 1.0
    """Optical depth per unit spacing added to the density spline that the K training points are drawn from; each
    point is weighted by p/q (spline over padded spline), so the colour estimate stays unbiased, and the density
    networks get a gradient at every point, not only through its position. 0: draw from the spline itself (the
    paper's estimator), which on unbounded scenes paints the image on a far shell (README, "Decisions")."""
    background_color: Literal["auto", "random", "last_sample", "black", "white"] = "auto"
    """Colour behind the density, weighted 1 - y_f. "auto": the colour auto-data says the images were composited on
    (Blender scenes: white, as in the paper; RGB images with one plain border colour: that colour), else "last_sample"
    (nerfacto's default): the radiance at the last of the K points, in the spline's last quantile stratum, with no
    extra radiance call. "random" on data that was not composited makes the density explain every pixel, but while
    the opacity is low the noise alone is brighter than dark targets, and the radiance field's colour saturates at
    black within ten steps and never recovers (README, "Decisions worth knowing")."""
    # Not measured with Monte Carlo rendering: the density levels draw from their padded splines.
    uniform_mixture: Suppress[float] = 0.0
    ray_bounds: Literal["auto", "near-far", "scene-box"] = "auto"
    """As for rvs-nerfacto, where near-far is the default. Here "auto": on data composited onto a background, far
    space would otherwise fill with fog of that colour, which takes Monte Carlo points from the object and stalls
    training near the background-only image (README, "Decisions worth knowing")."""
    use_distortion_loss: bool = False
    """Add nerfacto's distortion loss (times distortion-loss-mult) on the final density spline's intervals. Off by
    default, as in rvs-nerfacto: paired runs gave no gain and one collapse with it (README, "Decisions worth knowing")."""
    # Nerfacto knobs with no meaning here (K replaces the nerf samples; the radiance field's density, normals
    # and per-sample gradient scaling are not used): fixed and hidden from the CLI.
    num_nerf_samples_per_ray: Suppress[int] = 48
    use_gradient_scaling: Suppress[bool] = False
    predict_normals: Suppress[bool] = False
    orientation_loss_mult: Suppress[float] = 0.0
    pred_normal_loss_mult: Suppress[float] = 0.0
    # The density networks are the model here: they learn on every step.
    proposal_update_every: Suppress[int] = 0
    proposal_warmup: Suppress[int] = 0
    # Not measured with Monte Carlo rendering: the density levels sample their splines from the first step.
    use_proposal_weight_anneal: Suppress[bool] = False


class RVSMonteCarloModel(RVSNerfactoModel):
    """Monte Carlo volume rendering from the density networks' RVS spline.

    The density networks are nerfacto's proposal networks; the radiance network is ``NerfactoField`` (position
    features, view direction, appearance embedding), evaluated only at the K points per ray. Its own density
    head is computed but not used: the density along the ray is the last density network's spline.
    """

    config: RVSMonteCarloModelConfig
    proposal_sampler: RVSMonteCarloSampler

    def populate_modules(self) -> None:
        super().populate_modules()
        config = self.config
        self.renderer_rgb = RGBRenderer(background_color=self.background_color())
        self.proposal_sampler = RVSMonteCarloSampler(
            num_proposal_samples_per_ray=config.num_proposal_samples_per_ray,
            num_radiance_samples=config.num_radiance_samples,
            eval_num_radiance_samples=config.eval_num_radiance_samples or config.num_radiance_samples,
            eval_num_draws=config.eval_num_draws,
            training_padding=config.training_padding,
            single_jitter=config.use_single_jitter,
            interpolation=config.density_interpolation,
            density_padding=config.density_padding,
            initial_sampler=self.proposal_sampler.initial_sampler,
        )
        eval_k = self.proposal_sampler.eval_num_radiance_samples
        # Found by the viewer among the pipeline's attributes; its callback runs under the training lock.
        self.viewer_radiance_samples = ViewerSlider(
            "Render K",
            eval_k,
            1,
            max(VIEWER_MAX_RADIANCE_SAMPLES, eval_k),
            step=1,
            cb_hook=lambda slider: self.set_eval_num_radiance_samples(int(slider.value)),
            hint="Radiance-field evaluations per ray for rendering and evaluation; training keeps num-radiance-samples.",
        )

    def background_color(self) -> BackgroundColor:
        """The configured background colour, with "auto" resolved from the data's metadata (see the config)."""
        if self.config.background_color != "auto":
            return self.config.background_color
        composited_on = self.data_background()
        return "last_sample" if composited_on is None else composited_on.float()

    def set_eval_num_radiance_samples(self, num_radiance_samples: int) -> None:
        """Sets K for evaluation and rendering (the viewer's slider calls this); training's K is unchanged."""
        if num_radiance_samples < 1:
            raise ValueError(f"K must be at least 1 (got {num_radiance_samples}).")
        self.proposal_sampler.eval_num_radiance_samples = num_radiance_samples

    def _validate_config(self) -> None:
        """The parent's checks, plus those of the Monte Carlo options."""
        config = self.config
        if config.num_proposal_iterations < 1:
            raise ImpossibleOptions("rvs-mc needs at least one density network: set num-proposal-iterations to 1 or more.")
        super()._validate_config()
        if config.num_radiance_samples < 1:
            raise ImpossibleOptions(f"num-radiance-samples must be at least 1 (got {config.num_radiance_samples}).")
        if config.eval_num_radiance_samples is not None and config.eval_num_radiance_samples < 1:
            raise ImpossibleOptions(f"eval-num-radiance-samples must be at least 1 (got {config.eval_num_radiance_samples}).")
        if config.training_padding < 0:
            raise ImpossibleOptions(f"training-padding must be 0 or more (got {config.training_padding}).")
        if config.eval_num_draws < 1:
            raise ImpossibleOptions(f"eval-num-draws must be at least 1 (got {config.eval_num_draws}).")

    def level_sample_counts(self) -> Tuple[int, ...]:
        """Samples per ray at each density level (the K radiance points are drawn from the last one's spline)."""
        return tuple(self.config.num_proposal_samples_per_ray)

    @property
    def radiance_evals_per_ray(self) -> int:
        """Radiance-field evaluations per ray at evaluation: K times the number of draws."""
        return self.proposal_sampler.eval_num_radiance_samples * self.proposal_sampler.eval_num_draws

    def get_outputs(self, ray_bundle: RayBundle) -> Dict[str, Tensor | List]:
        """Colour from the radiance field at the K points; accumulation, median ``depth`` and ``expected_depth`` (as in
        nerfacto) by quadrature on the spline's intervals."""
        if self.training:
            self.camera_optimizer.apply_to_raybundle(ray_bundle)
        points, weights_list, ray_samples_list = self.proposal_sampler(ray_bundle, density_fns=self.density_fns)
        spline_weights, spline_intervals = weights_list[-1], ray_samples_list[-1]
        accumulation = self.renderer_accumulation(weights=spline_weights)
        point_weights = points.metadata["point_weights"]
        field_outputs = self.field(points)
        outputs = {
            "rgb": self.renderer_rgb(rgb=field_outputs[FieldHeadNames.RGB], weights=point_weights),
            "accumulation": accumulation,
            "depth": self.renderer_depth(weights=spline_weights, ray_samples=spline_intervals),
            "expected_depth": self.renderer_expected_depth(weights=spline_weights, ray_samples=spline_intervals),
        }
        if self.training:
            outputs["weights_list"], outputs["ray_samples_list"] = weights_list, ray_samples_list
        for i in range(self.config.num_proposal_iterations):
            outputs[f"prop_depth_{i}"] = self.renderer_depth(weights=weights_list[i], ray_samples=ray_samples_list[i])
        return outputs

    def get_outputs_for_camera_ray_bundle(self, camera_ray_bundle: RayBundle) -> Dict[str, Tensor]:
        """Nerfstudio's chunked render of one image, its evaluation draws re-seeded once for the whole image."""
        with self.proposal_sampler.image_render(camera_ray_bundle.origins.device):
            return super().get_outputs_for_camera_ray_bundle(camera_ray_bundle)

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        """Nerfacto's metrics and images, plus the radiance-field evaluations per ray that the render cost."""
        metrics, images = super().get_image_metrics_and_images(outputs, batch)
        metrics["radiance_evals_per_ray"] = float(self.radiance_evals_per_ray)
        return metrics, images
