"""Density splines along rays and reparameterized inverse-transform sampling (pure torch).

Implements §1–2 of Morozov et al., *Differentiable Rendering with Reparameterized Volume Sampling*,
AISTATS 2024 (arXiv:2302.10970). This module imports no nerfstudio: it is the functional core that
``rvs_nerfstudio.samplers.proposal`` adapts to nerfstudio types.

A density known at knots :math:`t_0 < \\dots < t_m` (values :math:`s_i`) is interpolated either

- ``"linear"``: :math:`\\hat\\sigma(t) = s_i + a_i (t - t_i)`, :math:`a_i = (s_{i+1} - s_i) / \\Delta_i`;
- ``"constant"``: :math:`\\hat\\sigma(t) = s_i` on :math:`[t_i, t_{i+1})` (the last knot's value is unused).

Its integral is :math:`S(t) = I_i + s_i x + \\tfrac12 a_i x^2` with :math:`x = t - t_i` and
:math:`I_i = S(t_i)`. Opacity :math:`F = 1 - e^{-S}`, transmittance :math:`T = e^{-S}`, and the
ray's total opacity is :math:`y_f = F(t_m)`.

Everything here is differentiable with respect to knots and densities; nothing is detached.
All functions are batched over leading dimensions ``*batch`` and work in float32 and float64.
"""

from __future__ import annotations

from typing import Literal, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

Interpolation = Literal["linear", "constant"]
Jitter = Literal["none", "independent", "single"]

DEFAULT_GRADIENT_FLOOR = 1e-2
"""ε of :func:`sample`: sample gradients are exact where the sample density is at least ε times uniform."""


def _check_spline(knots: Tensor, densities: Tensor) -> None:
    """Rejects a malformed spline in one line; every public function reaches this through the bin helpers."""
    if knots.shape[-1] < 2 or densities.shape[-1] != knots.shape[-1]:
        raise ValueError(
            f"A density spline needs at least 2 knots and one density per knot (got {knots.shape[-1]} knots and "
            f"{densities.shape[-1]} densities): sample at least 1 bin per ray at every level."
        )


def _bin_slopes(
    knots: Float[Tensor, "*batch m1"], densities: Float[Tensor, "*batch m1"], interpolation: Interpolation
) -> Tuple[Float[Tensor, "*batch m"], Float[Tensor, "*batch m"]]:
    """Bin widths :math:`\\Delta_i` and density slopes :math:`a_i` (zero for empty bins and constant splines)."""
    _check_spline(knots, densities)
    widths = knots[..., 1:] - knots[..., :-1]
    if interpolation == "constant":
        return widths, torch.zeros_like(widths)
    nonempty = widths > 0
    slopes = (densities[..., 1:] - densities[..., :-1]) / torch.where(nonempty, widths, torch.ones_like(widths))
    return widths, torch.where(nonempty, slopes, torch.zeros_like(slopes))


def _bin_areas(
    knots: Float[Tensor, "*batch m1"], densities: Float[Tensor, "*batch m1"], interpolation: Interpolation
) -> Float[Tensor, "*batch m"]:
    """Each bin's optical depth: a trapezoid (linear) or a rectangle (constant)."""
    _check_spline(knots, densities)
    widths = knots[..., 1:] - knots[..., :-1]
    if interpolation == "constant":
        return densities[..., :-1] * widths
    return 0.5 * (densities[..., :-1] + densities[..., 1:]) * widths


def _position_in_bin(
    t: Float[Tensor, "*batch n"],
    knots: Float[Tensor, "*batch m1"],
    densities: Float[Tensor, "*batch m1"],
    interpolation: Interpolation,
) -> Tuple[Tensor, Float[Tensor, "*batch n"], Float[Tensor, "*batch n"]]:
    """For each ``t``: its bin ``i`` (the first or last one off the spline), the offset :math:`x` into it clamped to
    :math:`[0, \\Delta_i]`, and the bin's slope :math:`a_i`."""
    widths, slopes = _bin_slopes(knots, densities, interpolation)
    bins = (torch.searchsorted(knots.contiguous(), t.contiguous(), right=True) - 1).clamp(0, widths.shape[-1] - 1)
    x = torch.minimum((t - knots.gather(-1, bins)).clamp_min(0), widths.gather(-1, bins))
    return bins, x, slopes.gather(-1, bins)


def knot_integrals(
    knots: Float[Tensor, "*batch m1"], densities: Float[Tensor, "*batch m1"], interpolation: Interpolation = "linear"
) -> Float[Tensor, "*batch m1"]:
    """Integral of the spline from the first knot to each knot, :math:`I_i = S(t_i)` (so ``I[..., 0] == 0``).

    >>> knot_integrals(torch.tensor([0.0, 1.0, 3.0]), torch.tensor([0.0, 2.0, 2.0]))
    tensor([0., 1., 5.])
    """
    areas = _bin_areas(knots, densities, interpolation)
    return torch.cat([torch.zeros_like(areas[..., :1]), torch.cumsum(areas, dim=-1)], dim=-1)


def integral(
    t: Float[Tensor, "*batch n"],
    knots: Float[Tensor, "*batch m1"],
    densities: Float[Tensor, "*batch m1"],
    interpolation: Interpolation = "linear",
) -> Float[Tensor, "*batch n"]:
    """:math:`S(t) = \\int_{t_0}^{t} \\hat\\sigma`, with zero density outside ``[t_0, t_m]``.

    >>> integral(torch.tensor([0.5, 2.0, 9.0]), torch.tensor([0.0, 1.0, 3.0]), torch.tensor([0.0, 2.0, 2.0]))
    tensor([0.2500, 3.0000, 5.0000])
    """
    bins, x, slope = _position_in_bin(t, knots, densities, interpolation)
    start = knot_integrals(knots, densities, interpolation).gather(-1, bins)
    return start + densities.gather(-1, bins) * x + 0.5 * slope * x**2


def opacity(
    t: Float[Tensor, "*batch n"],
    knots: Float[Tensor, "*batch m1"],
    densities: Float[Tensor, "*batch m1"],
    interpolation: Interpolation = "linear",
) -> Float[Tensor, "*batch n"]:
    """Opacity :math:`F(t) = 1 - e^{-S(t)}`, the probability that the ray has terminated before ``t``."""
    return -torch.expm1(-integral(t, knots, densities, interpolation))


def transmittance(
    t: Float[Tensor, "*batch n"],
    knots: Float[Tensor, "*batch m1"],
    densities: Float[Tensor, "*batch m1"],
    interpolation: Interpolation = "linear",
) -> Float[Tensor, "*batch n"]:
    """Transmittance :math:`T(t) = e^{-S(t)}`."""
    return torch.exp(-integral(t, knots, densities, interpolation))


def total_opacity(
    knots: Float[Tensor, "*batch m1"], densities: Float[Tensor, "*batch m1"], interpolation: Interpolation = "linear"
) -> Float[Tensor, "*batch 1"]:
    """The ray's accumulated opacity :math:`y_f = F(t_m)`."""
    return -torch.expm1(-knot_integrals(knots, densities, interpolation)[..., -1:])


def termination_density(
    t: Float[Tensor, "*batch n"],
    knots: Float[Tensor, "*batch m1"],
    densities: Float[Tensor, "*batch m1"],
    interpolation: Interpolation = "linear",
) -> Float[Tensor, "*batch n"]:
    """Density of the ray's termination distance, :math:`p(t) = \\hat\\sigma(t)\\, e^{-S(t)}` (zero outside the knots);
    it integrates to :math:`y_f`."""
    bins, x, slope = _position_in_bin(t, knots, densities, interpolation)
    density = densities.gather(-1, bins)
    optical_depth = knot_integrals(knots, densities, interpolation).gather(-1, bins) + density * x + 0.5 * slope * x**2
    inside = (t >= knots[..., :1]) & (t <= knots[..., -1:])
    return torch.where(inside, density + slope * x, 0.0) * torch.exp(-optical_depth)


def interval_weights(
    knots: Float[Tensor, "*batch m1"], densities: Float[Tensor, "*batch m1"], interpolation: Interpolation = "linear"
) -> Float[Tensor, "*batch m"]:
    """Probability that the ray terminates in each knot interval, :math:`F(t_{i+1}) - F(t_i)`; they sum to :math:`y_f`.

    Computed as :math:`T(t_i)\\,(1 - e^{-(I_{i+1} - I_i)})` from each interval's own optical depth, so weights
    stay accurate where :math:`F` is close to 1. With the interval midpoints they give the quadrature of any
    function against the termination distribution, e.g. the expected depth :math:`\\sum_i w_i \\bar t_i / y_f`.

    >>> interval_weights(torch.tensor([0.0, 1.0, 3.0]), torch.tensor([0.0, 2.0, 2.0]))
    tensor([0.6321, 0.3611])
    """
    depths = _bin_areas(knots, densities, interpolation)
    starts = torch.cat([torch.zeros_like(depths[..., :1]), torch.cumsum(depths[..., :-1], dim=-1)], dim=-1)
    return torch.exp(-starts) * -torch.expm1(-depths)


def stratified_u(
    batch_shape: torch.Size | Tuple[int, ...],
    num_samples: int,
    jitter: Jitter,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
) -> Float[Tensor, "*batch num_samples"]:
    """Sorted quantiles :math:`u_k = (k + \\xi_k) / K` in ``(0, 1)``.

    ``jitter="none"`` gives the midpoints :math:`\\xi_k = 1/2` (deterministic, for evaluation);
    ``"independent"`` draws one :math:`\\xi_k \\sim U[0, 1)` per stratum; ``"single"`` one per ray.
    """
    strata = torch.arange(num_samples, device=device, dtype=dtype)
    if jitter == "none":
        offsets = torch.full((*batch_shape, num_samples), 0.5, device=device, dtype=dtype)
    else:
        jitter_shape = (*batch_shape, num_samples if jitter == "independent" else 1)
        offsets = torch.rand(jitter_shape, device=device, dtype=dtype, generator=generator)
    return (strata + offsets) / num_samples


def sample(
    knots: Float[Tensor, "*batch m1"],
    densities: Float[Tensor, "*batch m1"],
    u: Float[Tensor, "*batch n"],
    interpolation: Interpolation = "linear",
    gradient_floor: float = DEFAULT_GRADIENT_FLOOR,
) -> Float[Tensor, "*batch n"]:
    """Reparameterized inverse-transform samples of the ray-termination distribution truncated to the ray.

    Solves :math:`F(t_k) = u_k\\, y_f`, i.e. :math:`S(t_k) = -\\log(1 - u_k y_f)`, in closed form: the bin is
    found on the knot integrals, then the in-bin quadratic :math:`I_i + s_i x + \\tfrac12 a_i x^2 = S^*`
    is solved with the cancellation-free root :math:`x = -2c / (s_i + \\sqrt{s_i^2 - 2 a_i c})`,
    :math:`c = I_i - S^* \\le 0`. The samples are differentiable with respect to ``knots`` and
    ``densities`` (the bin index is piecewise constant; the sample is continuous across bins).
    Sorted ``u`` gives sorted samples. A ray whose density is zero everywhere gets samples uniform in t.

    Bounded gradients. The exact derivative of a sample is :math:`\partial t_k = -\partial G(t_k) / g(t_k)`,
    with :math:`G = F / y_f` the truncated CDF and :math:`g = \hat\sigma T / y_f` its density, so it grows
    without bound where the density vanishes. The forward value is exact; in the backward pass the in-bin
    offset's gradient uses :math:`\max(g, \varepsilon / L)` instead of :math:`g`, with :math:`L = t_m - t_0` and
    :math:`\varepsilon` = ``gradient_floor``. Since :math:`S` is linear in the densities,
    :math:`|\partial \log G / \partial \log s_j| \le 1`, hence
    :math:`|\partial t_k / \partial \log s_j| \le L / \varepsilon` (the gradient with respect to a
    ``trunc_exp`` field's raw density output). Only samples where :math:`g < \varepsilon / L` are affected: at
    most a share :math:`\varepsilon` of them in expectation. ``gradient_floor=0`` gives the exact gradient.

    Args:
        knots: Sorted knot positions :math:`t_i` (duplicates allowed).
        densities: Non-negative densities :math:`s_i` at the knots.
        u: Quantiles in ``[0, 1]``, e.g. from :func:`stratified_u`.
        interpolation: ``"linear"`` (the paper's default) or ``"constant"``.
        gradient_floor: :math:`\varepsilon` above, a floor on the sample density relative to uniform on the ray.

    Returns:
        Sample positions in ``[t_0, t_m]``.

    >>> sample(torch.tensor([0.0, 1.0, 3.0]), torch.tensor([1.0, 1.0, 1.0]), torch.tensor([0.5]))
    tensor([0.6446])
    """
    tiny = torch.finfo(densities.dtype).tiny
    # Only the integrals and the bin search touch all m bins; widths, slopes and the root are computed at the
    # n chosen bins.
    integrals = knot_integrals(knots, densities, interpolation)
    total = integrals[..., -1:]
    # S* = -log(1 - u y_f). Where u y_f rounds to 1 the log is infinite and log1p's backward is 0/0 (NaN)
    # even when masked by the minimum, so give log1p a harmless argument there and take S* = S(t_m).
    scaled = u * torch.expm1(-total)
    full = scaled <= -1
    target = torch.where(full, total, torch.minimum(-torch.log1p(torch.where(full, 0.0, scaled)), total))

    bins = (torch.searchsorted(integrals, target.contiguous(), right=True) - 1).clamp(0, knots.shape[-1] - 2)
    offset = integrals.gather(-1, bins) - target
    density = densities.gather(-1, bins)
    start = knots.gather(-1, bins)
    width = knots.gather(-1, bins + 1) - start
    if interpolation == "linear":
        nonempty = width > 0
        slope = (densities.gather(-1, bins + 1) - density) / torch.where(nonempty, width, 1.0)
        discriminant = (density**2 - 2 * torch.where(nonempty, slope, 0.0) * offset).clamp_min(0) + tiny
        local_density = torch.sqrt(discriminant)  # σ̂(t_k) = s_i + a_i x
        x = -2 * offset / (density + local_density)
    else:
        local_density = density
        x = -offset / density.clamp_min(tiny)
    x = torch.minimum(x.clamp_min(0), width)
    if gradient_floor > 0 and x.requires_grad:  # nothing to bound without a backward pass (e.g. evaluation)
        # g(t_k) = σ̂(t_k) T(t_k) / y_f, with T(t_k) = exp(-S*); the offset's gradient is scaled by g / max(g, ε/L).
        sample_density = local_density * torch.exp(-target) / (-torch.expm1(-total)).clamp_min(tiny)
        floor = gradient_floor / (knots[..., -1:] - knots[..., :1]).clamp_min(tiny)
        x = _ScaleGradient.apply(x, torch.where(sample_density >= floor, 1.0, sample_density / floor).detach())
    samples = start + x

    uniform = knots[..., :1] + u * (knots[..., -1:] - knots[..., :1])
    return torch.where(total > 0, samples, uniform)


def importance_sample(
    knots: Float[Tensor, "*batch m1"],
    densities: Float[Tensor, "*batch m1"],
    u: Float[Tensor, "*batch n"],
    padding: float,
    interpolation: Interpolation = "linear",
) -> Tuple[Float[Tensor, "*batch n"], Float[Tensor, "*batch n"]]:
    """Samples of the spline with ``padding`` added to its densities, and importance weights for the unpadded one.

    The samples :math:`t_k` are :func:`sample` of :math:`q`, the termination distribution of :math:`\\hat\\sigma +`
    ``padding`` truncated to the ray; the weights are :math:`w_k = p(t_k) / (n\\, q(t_k))` with :math:`p` the
    unpadded :func:`termination_density`. So :math:`\\sum_k w_k f(t_k)` estimates :math:`\\int f\\, dF` without bias
    for stratified ``u``, and its gradient reaches the densities at every sample through :math:`p(t_k)`, not only
    through the positions. That gradient is unbiased for a linear spline; with ``"constant"`` the weight jumps where a
    sample crosses a knot, which the pathwise gradient does not see. The weights are at most
    :math:`e^{\\text{padding} \\cdot L} / n` (:math:`L` the ray's length), since the padded transmittance is the unpadded one times :math:`e^{-\\text{padding}\\,(t - t_0)}`.
    """
    padded = densities + padding
    samples = sample(knots, padded, u, interpolation)
    tiny = torch.finfo(densities.dtype).tiny
    proposal = termination_density(samples, knots, padded, interpolation) / total_opacity(knots, padded, interpolation)
    target = termination_density(samples, knots, densities, interpolation)
    return samples, target / (u.shape[-1] * proposal.clamp_min(tiny))


def sample_mixture(
    knots: Float[Tensor, "*batch m1"],
    densities: Float[Tensor, "*batch m1"],
    u: Float[Tensor, "*batch n"],
    uniform_share: float,
    interpolation: Interpolation = "linear",
) -> Float[Tensor, "*batch n"]:
    """Reparameterized inverse-transform samples of the spline's termination histogram mixed with the uniform.

    With probability :math:`1 - \\lambda` (``uniform_share`` :math:`= \\lambda`) a sample falls in knot interval
    :math:`i` with that interval's termination probability :math:`w_i / y_f` (:func:`interval_weights`) and lies
    uniformly inside it, as nerfstudio's ``PDFSampler`` places its samples in a histogram's bins; with probability
    :math:`\\lambda` it lies uniformly on the ray. The mixture's CDF is piecewise linear between the knots,
    :math:`Q(t_i) = (1 - \\lambda) F(t_i) / y_f + \\lambda (t_i - t_0) / L` with :math:`L = t_m - t_0`, so its
    inverse is exact and closed-form, :math:`t = t_i + \\Delta_i (u - Q_i) / (Q_{i+1} - Q_i)`, and differentiable with
    respect to the knots and densities through :math:`Q`. Since the mixture's density is at least :math:`\\lambda / L`
    and :math:`|\\partial (F / y_f) / \\partial \\log s_j| \\le 1`,
    :math:`|\\partial t_k / \\partial \\log s_j| \\le (1 - \\lambda) L / \\lambda`: no gradient floor is needed.
    ``u`` must be sorted along the last dimension (as :func:`stratified_u` gives it); the samples are then sorted
    too. A ray whose density is zero everywhere gets samples uniform in t.

    >>> sample_mixture(torch.tensor([0.0, 1.0, 3.0]), torch.tensor([0.0, 2.0, 2.0]), torch.tensor([0.5]), 0.5)
    tensor([1.0587])
    """
    integrals = knot_integrals(knots, densities, interpolation)
    total = integrals[..., -1:]
    share = torch.where(total > 0, uniform_share, 1.0)
    termination = -torch.expm1(-integrals) / torch.where(total > 0, -torch.expm1(-total), 1.0)
    length = knots[..., -1:] - knots[..., :1]
    uniform = (knots - knots[..., :1]) / torch.where(length > 0, length, 1.0)
    knot_cdf = (1 - share) * termination + share * uniform
    bins = (torch.searchsorted(knot_cdf.detach().contiguous(), u.contiguous(), right=True) - 1).clamp(0, knots.shape[-1] - 2)
    cdf_start, cdf_end = knot_cdf.gather(-1, bins), knot_cdf.gather(-1, bins + 1)
    start, end = knots.gather(-1, bins), knots.gather(-1, bins + 1)
    rise = cdf_end - cdf_start
    fraction = ((u - cdf_start) / torch.where(rise > 0, rise, 1.0)).clamp(0, 1)
    return torch.cummax(start + fraction * (end - start), dim=-1).values  # sorted also where rounding is not


class _ScaleGradient(torch.autograd.Function):
    """The identity whose backward multiplies the incoming gradient by a constant ``scale`` (same shape)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor) -> Tensor:
        ctx.save_for_backward(scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tuple[Tensor, None]:
        (scale,) = ctx.saved_tensors
        return grad * scale, None
