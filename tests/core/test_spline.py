"""Tests of ``rvs_nerfstudio.core.spline`` against independent float64 references (properties of RVS.md §5).

The references below never call the module: the density is evaluated pointwise with its own bin lookup
and integrated numerically with a fine midpoint rule (the grid contains the knots, so the quadrature is
exact up to rounding for both the linear and the constant spline).
"""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch
from scipy import stats

from rvs_nerfstudio.core import spline

INTERPOLATIONS = ("linear", "constant")
GRID_POINTS = 20001


# ----------------------------------------------------------------------------------------------------------
# Independent references (numpy, float64, one ray at a time)
# ----------------------------------------------------------------------------------------------------------


def ref_sigma(t: np.ndarray, knots: np.ndarray, densities: np.ndarray, interpolation: str) -> np.ndarray:
    """σ̂(t) for ``t`` strictly inside non-empty bins (no zero-width bin is ever selected there)."""
    i = np.searchsorted(knots, t, side="right") - 1
    if interpolation == "constant":
        return densities[i]
    frac = (t - knots[i]) / (knots[i + 1] - knots[i])
    return densities[i] + frac * (densities[i + 1] - densities[i])


def ref_integral(knots, densities, interpolation: str, t) -> np.ndarray:
    """S(t) = ∫_{t_0}^{t} σ̂ by midpoint quadrature on a fine grid that contains the knots and the queries."""
    knots, densities = np.asarray(knots, np.float64), np.asarray(densities, np.float64)
    t = np.clip(np.asarray(t, np.float64), knots[0], knots[-1])
    grid = np.unique(np.concatenate([np.linspace(knots[0], knots[-1], GRID_POINTS), knots, t.ravel()]))
    cells = np.diff(grid)
    mids = grid[:-1] + 0.5 * cells
    cumulative = np.concatenate([[0.0], np.cumsum(ref_sigma(mids, knots, densities, interpolation) * cells)])
    return cumulative[np.searchsorted(grid, t)]


def ref_opacity(knots, densities, interpolation: str, t) -> np.ndarray:
    """F(t) = 1 - exp(-S(t)) from :func:`ref_integral`."""
    return -np.expm1(-ref_integral(knots, densities, interpolation, t))


def ref_total_opacity(knots, densities, interpolation: str) -> float:
    """y_f = F(t_m) from :func:`ref_integral`."""
    return float(ref_opacity(knots, densities, interpolation, [np.float64(knots[-1])])[0])


def random_rays(batch, num_knots, dtype=torch.float64, seed=0, near=0.5, width=(0.1, 1.0), density=(0.0, 3.0)):
    """Sorted distinct knots and non-negative densities of shape ``[*batch, num_knots]``."""
    rng = np.random.default_rng(seed)
    widths = rng.uniform(*width, (*batch, num_knots - 1))
    knots = near + np.concatenate([np.zeros((*batch, 1)), np.cumsum(widths, axis=-1)], axis=-1)
    densities = rng.uniform(*density, (*batch, num_knots))
    return torch.tensor(knots, dtype=dtype), torch.tensor(densities, dtype=dtype)


def rays(*tensors: torch.Tensor):
    """Iterate over the rays of batched tensors as float64 numpy rows."""
    flat = [x.detach().reshape(-1, x.shape[-1]).double().numpy() for x in tensors]
    return zip(*flat)


# ----------------------------------------------------------------------------------------------------------
# 1. Integrals, opacity, transmittance and samples agree with the numerical integration
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_integrals_match_numerical_integration(interpolation, dtype, rtol):
    knots, densities = random_rays((2, 3), 9, dtype=dtype, seed=1)
    gen = torch.Generator().manual_seed(1)
    # Queries inside and outside [t_0, t_m] (zero density outside).
    span = knots[..., -1:] - knots[..., :1] + 0.6
    t = knots[..., :1] - 0.3 + span * torch.rand((2, 3, 25), generator=gen, dtype=dtype)
    t, _ = torch.sort(t, dim=-1)

    got_knots = spline.knot_integrals(knots, densities, interpolation)
    got_s = spline.integral(t, knots, densities, interpolation)
    got_f = spline.opacity(t, knots, densities, interpolation)
    got_t = spline.transmittance(t, knots, densities, interpolation)
    got_yf = spline.total_opacity(knots, densities, interpolation)
    assert got_s.shape == t.shape and got_knots.shape == knots.shape and got_yf.shape == (2, 3, 1)

    rows = rays(knots, densities, t, got_knots, got_s, got_f, got_t, got_yf)
    for k, d, tq, i_knots, s, f, tr, yf in rows:
        ref_s = ref_integral(k, d, interpolation, tq)
        np.testing.assert_allclose(i_knots, ref_integral(k, d, interpolation, k), rtol=rtol, atol=rtol)
        np.testing.assert_allclose(s, ref_s, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(f, -np.expm1(-ref_s), rtol=rtol, atol=rtol)
        np.testing.assert_allclose(tr, np.exp(-ref_s), rtol=rtol, atol=rtol)
        np.testing.assert_allclose(yf, [ref_total_opacity(k, d, interpolation)], rtol=rtol, atol=rtol)


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 2e-6)])
@pytest.mark.parametrize("density", [(0.0, 3.0), (5.0, 40.0)])  # the second reaches y_f ≈ 1 early on the ray
def test_interval_weights_match_numerical_integration(interpolation, dtype, tol, density):
    """interval_weights[i] = F_ref(t_{i+1}) - F_ref(t_i) interval by interval, computed as T_ref(t_i) - T_ref(t_{i+1})
    from the fine-grid integral (exact where F is close to 1); a weight moved to a neighbouring interval fails."""
    knots, densities = random_rays((2, 3), 9, dtype=dtype, seed=11, density=density)
    weights = spline.interval_weights(knots, densities, interpolation)
    assert weights.shape == (2, 3, 8) and weights.dtype == dtype
    for k, d, w in rays(knots, densities, weights):
        transmittance = np.exp(-ref_integral(k, d, interpolation, k))
        expected = transmittance[:-1] - transmittance[1:]
        np.testing.assert_allclose(w, expected, rtol=tol, atol=tol)
        assert np.ptp(expected) > 1e-3  # neighbouring intervals really differ, so a shift is visible
    # The per-interval weights of a hand-written two-interval ray: σ̂ = 2 on [0, 1], 0 on [1, 3] (constant) and
    # a ramp 0 → 2 then 2 (linear): closed forms 1 - e^{-2}, 0 and 1 - e^{-1}, e^{-1}(1 - e^{-4}).
    three_knots = torch.tensor([0.0, 1.0, 3.0], dtype=dtype)
    step = spline.interval_weights(three_knots, torch.tensor([2.0, 0.0, 0.0], dtype=dtype), "constant")
    ramp = spline.interval_weights(three_knots, torch.tensor([0.0, 2.0, 2.0], dtype=dtype), "linear")
    np.testing.assert_allclose(step.double().numpy(), [-np.expm1(-2.0), 0.0], rtol=tol, atol=tol)
    ramp_expected = [-np.expm1(-1.0), np.exp(-1.0) * -np.expm1(-4.0)]
    np.testing.assert_allclose(ramp.double().numpy(), ramp_expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_samples_hit_their_quantiles(interpolation):
    """F_ref(t_k) = u_k · y_f for float64 samples of random batched rays, which stay sorted and inside the ray."""
    knots, densities = random_rays((2, 3), 9, seed=2)
    u = spline.stratified_u((2, 3), 32, "independent", dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    samples = spline.sample(knots, densities, u, interpolation)
    assert (samples >= knots[..., :1]).all() and (samples <= knots[..., -1:]).all()
    assert (torch.diff(samples) > 0).all()  # sorted u, positive densities: strictly sorted samples
    for k, d, uk, tk in rays(knots, densities, u, samples):
        y_f = ref_total_opacity(k, d, interpolation)
        np.testing.assert_allclose(ref_opacity(k, d, interpolation, tk), uk * y_f, atol=1e-10)


# ----------------------------------------------------------------------------------------------------------
# 2. Samples are distributed as p(t) / y_f (Kolmogorov–Smirnov)
# ----------------------------------------------------------------------------------------------------------

KS_KNOTS = torch.tensor([0.0, 0.5, 1.2, 2.0, 2.5, 3.5, 4.0])
KS_DENSITIES = torch.tensor([0.1, 2.0, 0.3, 0.0, 1.5, 4.0, 0.2])


def ks_pvalue(samples: torch.Tensor, knots: torch.Tensor, densities: torch.Tensor, interpolation: str) -> float:
    """KS p-value of ``samples`` against the normalised numerically integrated CDF F_ref / y_f."""
    k, d = knots.double().numpy(), densities.double().numpy()
    grid = np.linspace(k[0], k[-1], 100001)
    cdf_grid = ref_opacity(k, d, interpolation, grid)
    return stats.kstest(samples.double().numpy(), lambda x: np.interp(x, grid, cdf_grid / cdf_grid[-1])).pvalue


def ks_samples(densities: torch.Tensor, interpolation: str, knots: torch.Tensor = KS_KNOTS) -> torch.Tensor:
    """20000 samples of one ray from u ~ U(0, 1) with a fixed seed."""
    u = torch.rand(20000, generator=torch.Generator().manual_seed(3))
    return spline.sample(knots, densities, u, interpolation)


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_samples_follow_termination_distribution(interpolation):
    assert ks_pvalue(ks_samples(KS_DENSITIES, interpolation), KS_KNOTS, KS_DENSITIES, interpolation) > 1e-3


def test_ks_detects_the_wrong_distribution():
    """The KS check has power: constant-spline samples are rejected against the linear CDF."""
    knots, densities = torch.arange(5.0), torch.tensor([0.0, 3.0, 0.0, 3.0, 0.0])
    assert ks_pvalue(ks_samples(densities, "constant", knots), knots, densities, "linear") < 1e-12


# ----------------------------------------------------------------------------------------------------------
# 3. Round trip F(F⁻¹(u·y_f)) = u·y_f in float32 across density and width scales
# ----------------------------------------------------------------------------------------------------------

ROUND_TRIP_U = torch.cat([torch.tensor([0.0, 1e-7]), torch.linspace(0, 1, 101)[1:-1], torch.tensor([1 - 6e-8, 1.0])])


def round_trip_errors(knots: torch.Tensor, densities: torch.Tensor, interpolation: str):
    """Float32 samples of every ray, checked in float64.

    Yields per ray ``(|F_ref(t) - u·y_f|, y_f, u·y_f, F_ref(t⁻), F_ref(t⁺))`` (t± the float32 neighbours of t).
    """
    u = ROUND_TRIP_U.expand(*knots.shape[:-1], -1)
    samples = spline.sample(knots, densities, u, interpolation)
    assert samples.dtype == torch.float32 and torch.isfinite(samples).all()
    for k, d, uk, tk in rays(knots, densities, u, samples):
        t32 = tk.astype(np.float32)
        below, above = np.nextafter(t32, -np.inf), np.nextafter(t32, np.inf)
        f, f_below, f_above = np.split(ref_opacity(k, d, interpolation, np.concatenate([t32, below, above])), 3)
        y_f = ref_total_opacity(k, d, interpolation)
        yield np.abs(f - uk * y_f), y_f, uk * y_f, f_below, f_above


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("density_scale", [1e-6, 1e-3, 1.0, 1e2, 1e4])
@pytest.mark.parametrize("width_scale", [1e-4, 1e-2, 1.0, 1e2, 1e3])
def test_round_trip_float32(interpolation, density_scale, width_scale):
    """|F(t) - u·y_f| ≤ 1e-5·y_f: 1e-5 absolute, and 1e-5 relative to y_f when y_f is tiny (down to ~1e-10)."""
    knots, densities = random_rays(
        (4,), 17, torch.float32, seed=4, near=0.0, width=(0.1 * width_scale, width_scale), density=(0.0, density_scale)
    )
    for error, y_f, *_ in round_trip_errors(knots, densities, interpolation):
        assert error.max() <= 1e-5 * y_f


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("near", [0.0, 2.0])
def test_round_trip_float32_resolution_limited(interpolation, near):
    """Mixed scales in one ray (densities 1e-6…1e4, widths 1e-4…1e3) and knots away from t = 0.

    Here 1e-5 absolute cannot hold for any float32 output: near t = 2 consecutive float32 numbers are 2.4e-7
    apart, so where σ̂ = 1e4 the opacity jumps by ~2e-3 between neighbouring representable t (and by far more
    at t ~ 1e3). The achievable statement, asserted here, is that the exact quantile u·y_f lies between F at
    the float32 neighbours of the returned sample (up to 1e-5·y_f): the sample is within one float32 step of
    the exact answer, and the core loses nothing beyond the output's own rounding.
    """
    rng = np.random.default_rng(5)
    widths = 10 ** rng.uniform(-4, 3, (6, 16))
    knots = near + np.concatenate([np.zeros((6, 1)), np.cumsum(widths, axis=-1)], axis=-1)
    densities = 10 ** rng.uniform(-6, 4, (6, 17))
    knots, densities = torch.tensor(knots, dtype=torch.float32), torch.tensor(densities, dtype=torch.float32)
    for _, y_f, target, f_below, f_above in round_trip_errors(knots, densities, interpolation):
        assert (f_below - 1e-5 * y_f <= target).all() and (target <= f_above + 1e-5 * y_f).all()


# ----------------------------------------------------------------------------------------------------------
# 4. Gradients are correct (float64 gradcheck)
# ----------------------------------------------------------------------------------------------------------

GC_KNOTS = torch.tensor([[0.0, 0.7, 1.5, 2.6, 3.2], [1.0, 1.4, 2.5, 2.9, 4.0]], dtype=torch.float64)
GC_DENSITIES = torch.tensor([[0.4, 1.3, 0.8, 2.0, 0.5], [1.1, 0.2, 0.9, 0.3, 1.7]], dtype=torch.float64)
GC_U = torch.tensor([[0.13, 0.38, 0.61, 0.87]] * 2, dtype=torch.float64)


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_gradcheck_sample(interpolation):
    samples = spline.sample(GC_KNOTS, GC_DENSITIES, GC_U, interpolation)
    # Finite differences are only valid away from the bin boundaries, where the active bin does not change.
    assert (samples[..., None] - GC_KNOTS[..., None, :]).abs().min() > 1e-2
    inputs = (GC_KNOTS.clone().requires_grad_(), GC_DENSITIES.clone().requires_grad_(), GC_U.clone().requires_grad_())
    assert torch.autograd.gradcheck(lambda k, d, u: spline.sample(k, d, u, interpolation), inputs)


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_gradcheck_integral_and_opacity(interpolation):
    t = torch.tensor([[0.3, 1.1, 2.0, 3.0], [1.2, 2.0, 2.7, 3.5]], dtype=torch.float64)
    inputs = (t.requires_grad_(), GC_KNOTS.clone().requires_grad_(), GC_DENSITIES.clone().requires_grad_())
    assert torch.autograd.gradcheck(lambda *a: spline.integral(*a, interpolation), inputs)
    assert torch.autograd.gradcheck(lambda *a: spline.opacity(*a, interpolation), inputs)
    assert torch.autograd.gradcheck(lambda k, d: spline.total_opacity(k, d, interpolation), inputs[1:])


# ----------------------------------------------------------------------------------------------------------
# 5. Degenerate rays: finite values and gradients, sensible samples
# ----------------------------------------------------------------------------------------------------------

EDGE_U = torch.tensor([0.0, 1e-9, 0.25, 0.5, 0.75, 1 - 1e-9, 1.0])  # 1 - 1e-9 rounds to 1 in float32
EDGE_CASES = {
    "all_zero": ([0.0, 1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0, 0.0]),
    "spike": ([0.0, 1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 1e8, 0.0, 0.0]),
    "spike_first": ([0.0, 1.0, 2.0, 3.0, 4.0], [1e8, 0.0, 0.0, 0.0, 0.0]),
    "y_f_is_one": ([0.0, 1.0, 2.0, 3.0, 4.0], [1e4, 1e4, 1e4, 1e4, 1e4]),
    "y_f_nearly_one": ([0.0, 1.0, 2.0, 3.0, 4.0], [30.0, 10.0, 40.0, 5.0, 20.0]),
    "duplicated_knots": ([0.0, 1.0, 1.0, 2.0, 3.0, 3.0], [1.0, 2.0, 3.0, 0.0, 1.0, 2.0]),
    "all_knots_equal": ([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]),
    "one_bin": ([0.5, 2.0], [0.3, 1.7]),
    "far_1e10": ([0.0, 0.5, 1.0, 2.0, 1e10], [0.2, 1.0, 0.5, 0.1, 0.05]),
    "far_1e10_mass_in_last_bin": ([0.0, 1.0, 10.0, 1e10], [1e-3, 0.0, 0.0, 1e-12]),
}


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", EDGE_CASES)
def test_degenerate_rays_are_finite_and_bounded(case, dtype, interpolation):
    knots = torch.tensor(EDGE_CASES[case][0], dtype=dtype, requires_grad=True)
    densities = torch.tensor(EDGE_CASES[case][1], dtype=dtype, requires_grad=True)
    samples = spline.sample(knots, densities, EDGE_U.to(dtype), interpolation)
    samples.sum().backward()
    for name, x in [("samples", samples), ("d/dknots", knots.grad), ("d/ddensities", densities.grad)]:
        assert torch.isfinite(x).all(), f"{name}: {x}"
    assert (samples >= knots[0]).all() and (samples <= knots[-1]).all()
    assert (torch.diff(samples) >= 0).all()
    # Each sample's |∂t/∂log s_j| is at most L/ε (spline.sample), so their sum's is at most n L/ε.
    bound = len(EDGE_U) * float(knots[-1] - knots[0]) / spline.DEFAULT_GRADIENT_FLOOR
    assert (densities.grad * densities).abs().max() <= bound * 1.001


# Sample gradients where the density vanishes: the in-bin offset's gradient uses the sample density g = σ̂ T / y_f
# floored at ε / L (spline.sample's docstring), which bounds |∂t_k / ∂log s_j| by L / ε.
FLOOR = spline.DEFAULT_GRADIENT_FLOOR
FLOOR_U = torch.tensor([1e-6, 1e-3, 0.1, 0.25, 0.5, 0.75, 0.97], dtype=torch.float64)
FLOOR_CASES = {
    **EDGE_CASES,
    "surface_start": ([0.0, 0.5, 0.6, 1.0], [0.0, 0.0, 50.0, 50.0]),  # empty space, then a density ramp
    "surface_gap": ([0.0, 1.0, 2.0, 3.0], [1.0, 0.0, 1.0, 1.0]),  # linear: σ̂ falls to 0 at t = 1 between two surfaces
}


def gap_quantile(interpolation: str, before: float = 1e-8) -> torch.Tensor:
    """The quantile just before the mass in front of t = 1 in "surface_gap": its sample lands where g -> 0 (linear)."""
    knots, densities = FLOOR_CASES["surface_gap"]
    share = ref_opacity(knots, densities, interpolation, [1.0])[0] / ref_total_opacity(knots, densities, interpolation)
    return torch.tensor([share * (1 - before)], dtype=torch.float64)


def ref_sample_density(knots, densities, interpolation: str, t) -> np.ndarray:
    """g(t) = σ̂(t) exp(-S(t)) / y_f from the numpy references."""
    sigma = ref_sigma(t, knots, densities, interpolation)
    return sigma * np.exp(-ref_integral(knots, densities, interpolation, t)) / ref_total_opacity(knots, densities, interpolation)


def log_density_jacobian(knots, densities, u, interpolation, gradient_floor=FLOOR) -> torch.Tensor:
    """∂t_k / ∂log s_j, [n, m], by autograd."""
    jacobian = torch.autograd.functional.jacobian(lambda d: spline.sample(knots, d, u, interpolation, gradient_floor), densities)
    return jacobian * densities


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("case", FLOOR_CASES)
def test_sample_gradients_are_bounded_and_match_finite_differences(case, interpolation):
    """|∂t_k/∂log s_j| <= L/ε always; the gradient is the finite difference where g >= ε/L and that times g L / ε below."""
    knots, densities = (torch.tensor(x, dtype=torch.float64) for x in FLOOR_CASES[case])
    length = float(knots[-1] - knots[0])
    u = torch.cat([FLOOR_U, gap_quantile(interpolation, 1e-5)]) if case == "surface_gap" else FLOOR_U
    samples = spline.sample(knots, densities, u, interpolation)
    jacobian = log_density_jacobian(knots, densities, u, interpolation)
    assert (jacobian.abs() <= length / FLOOR * (1 + 1e-9)).all(), jacobian.abs().max()
    if length == 0 or float(densities.max()) == 0:
        return
    t, k, d = samples.numpy(), knots.numpy(), densities.numpy()
    # Central differences in log s_j, where the sample's bin does not change and its density is positive.
    inside = (np.abs(t[:, None] - k[None, :]).min(axis=1) > 1e-6 * length) & (ref_sigma(t, k, d, interpolation) > 0)
    scale = np.minimum(1.0, ref_sample_density(k, d, interpolation, np.where(inside, t, k[0])) * length / FLOOR)
    step = 1e-7
    for j in np.flatnonzero(d > 0):
        bump = torch.zeros_like(densities)
        bump[j] = step
        plus, minus = (spline.sample(knots, densities * torch.exp(sign * bump), u, interpolation) for sign in (1, -1))
        finite_difference = ((plus - minus) / (2 * step)).numpy()
        np.testing.assert_allclose(
            jacobian[inside, j].numpy(), (finite_difference * scale)[inside], rtol=1e-3, atol=1e-8 * length
        )


def test_gradient_floor_acts_only_where_the_exact_gradient_exceeds_the_bound():
    """Between two surfaces, where σ̂ falls to 0, the exact gradient (ε = 0) exceeds L/ε: the floor is what bounds
    it. On a ray whose samples all lie where g >= ε/L the floor changes nothing."""
    knots, densities = (torch.tensor(x, dtype=torch.float64) for x in FLOOR_CASES["surface_gap"])
    u = gap_quantile("linear")
    exact = log_density_jacobian(knots, densities, u, "linear", gradient_floor=0.0)
    assert exact.abs().max() > 10 * 3.0 / FLOOR
    floored = log_density_jacobian(knots, densities, u, "linear")
    assert floored.abs().max() <= 3.0 / FLOOR
    for interpolation in INTERPOLATIONS:
        knots, densities = GC_KNOTS[0], GC_DENSITIES[0]
        floored, exact = (log_density_jacobian(knots, densities, GC_U[0], interpolation, e) for e in (FLOOR, 0.0))
        torch.testing.assert_close(floored, exact, rtol=0, atol=0)


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_floored_gradient_does_not_depend_on_where_the_ray_starts(interpolation):
    """Shifting every knot by 5 moves each sample by 5 and leaves ∂t/∂log s unchanged, floored entries included:
    the floor ε/L uses the spline's length L = t_m - t_0, not a position."""
    knots, densities = (torch.tensor(x, dtype=torch.float64) for x in FLOOR_CASES["surface_gap"])
    u = torch.cat([FLOOR_U, gap_quantile(interpolation, 1e-5)])
    at_zero, shifted = (log_density_jacobian(knots + shift, densities, u, interpolation) for shift in (0.0, 5.0))
    exact = log_density_jacobian(knots, densities, u, interpolation, gradient_floor=0.0)
    if interpolation == "linear":
        assert (at_zero != exact).any()  # the floor acts on this ray
    torch.testing.assert_close(shifted, at_zero, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(spline.sample(knots + 5.0, densities, u, interpolation), spline.sample(knots, densities, u, interpolation) + 5.0)


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_zero_density_gives_uniform_samples(interpolation):
    knots = torch.tensor([0.5, 1.0, 2.5, 4.5])
    samples = spline.sample(knots, torch.zeros(4), EDGE_U, interpolation)
    torch.testing.assert_close(samples, 0.5 + 4.0 * EDGE_U)


@pytest.mark.parametrize("interpolation, support", [("linear", (1.0, 3.0)), ("constant", (2.0, 3.0))])
def test_spike_pulls_samples_into_its_support(interpolation, support):
    """A 1e8 spike at knot 2 (zero elsewhere) holds all the mass: every sample lies where σ̂ > 0."""
    samples = spline.sample(torch.arange(5.0), torch.tensor([0.0, 0.0, 1e8, 0.0, 0.0]), EDGE_U, interpolation)
    assert (samples >= support[0]).all() and (samples <= support[1]).all()


# ----------------------------------------------------------------------------------------------------------
# 6. Gradient direction: density moves samples toward itself
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_density_pulls_samples_toward_it(interpolation):
    knots = torch.linspace(0.0, 4.0, 9, dtype=torch.float64)
    densities = torch.full((9,), 0.5, dtype=torch.float64, requires_grad=True)
    u = torch.tensor([0.5], dtype=torch.float64)
    (t_k,) = spline.sample(knots, densities, u, interpolation)
    (grad,) = torch.autograd.grad(t_k, densities)

    step = 1e-6
    for i in range(9):
        bump = step * torch.nn.functional.one_hot(torch.tensor(i), 9).double()
        plus, minus = (spline.sample(knots, densities + sign * bump, u, interpolation) for sign in (1, -1))
        f_d = (plus - minus) / (2 * step)
        assert grad[i].item() == pytest.approx(f_d.item(), rel=1e-5, abs=1e-9)

    # σ̂ near knot i: [t_{i-1}, t_{i+1}] (linear) or [t_i, t_{i+1}] (constant; the last knot is unused).
    lower = knots[:-1] if interpolation == "constant" else torch.cat([knots[:1], knots[:-1]])
    upper = knots[1:] if interpolation == "constant" else torch.cat([knots[1:], knots[-1:]])
    earlier, later = (upper <= t_k).nonzero().ravel(), (lower >= t_k).nonzero().ravel()
    assert len(earlier) >= 2 and len(later) >= 2
    assert (grad[earlier] < 0).all() and (grad[later] > 0).all()

    # Moving mass from knot j + 1 to knot j (equal spacing, interior knots: y_f is unchanged) never moves
    # the sample later, and strictly pulls it earlier when the moved mass straddles it.
    first = 0 if interpolation == "constant" else 1
    shift_earlier = grad[first:-2] - grad[first + 1 : -1]
    assert (shift_earlier <= 1e-12).all() and shift_earlier.min() < -1e-2


# ----------------------------------------------------------------------------------------------------------
# 7. Batched shapes agree with one ray at a time
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_batched_equals_loop(interpolation):
    knots, densities = random_rays((2, 3), 7, dtype=torch.float32, seed=6)
    densities[0, 1] = 0.0  # one all-zero ray in the batch
    u = spline.stratified_u((2, 3), 10, "independent", generator=torch.Generator().manual_seed(6))
    t = knots[..., :1] + (knots[..., -1:] - knots[..., :1]) * u
    knots.requires_grad_(True)
    densities.requires_grad_(True)

    def evaluate(k, d, u_, t_):
        return {
            "sample": spline.sample(k, d, u_, interpolation),
            "integral": spline.integral(t_, k, d, interpolation),
            "opacity": spline.opacity(t_, k, d, interpolation),
            "transmittance": spline.transmittance(t_, k, d, interpolation),
            "knot_integrals": spline.knot_integrals(k, d, interpolation),
            "total_opacity": spline.total_opacity(k, d, interpolation),
        }

    batched = evaluate(knots, densities, u, t)
    batched_grads = torch.autograd.grad(batched["sample"].sum(), (knots, densities))
    for a in range(2):
        for b in range(3):
            single = evaluate(knots[a, b], densities[a, b], u[a, b], t[a, b])
            for name, value in single.items():
                torch.testing.assert_close(batched[name][a, b], value, msg=name)
            single_grads = torch.autograd.grad(single["sample"].sum(), (knots, densities))
            torch.testing.assert_close(batched_grads[0][a, b], single_grads[0][a, b])
            torch.testing.assert_close(batched_grads[1][a, b], single_grads[1][a, b])


# ----------------------------------------------------------------------------------------------------------
# 8. Stratified quantiles
# ----------------------------------------------------------------------------------------------------------


def test_stratified_u_none_gives_midpoints():
    for num_samples in (1, 7, 48):
        u = spline.stratified_u((2, 3), num_samples, "none")
        expected = torch.tensor((np.arange(num_samples) + 0.5) / num_samples, dtype=torch.float32)
        assert u.shape == (2, 3, num_samples) and u.dtype == torch.float32
        assert torch.equal(u, expected.expand(2, 3, -1))


@pytest.mark.parametrize("jitter", ["independent", "single"])
def test_stratified_u_stays_in_strata(jitter):
    num_samples = 16
    def draw():
        generator = torch.Generator().manual_seed(7)
        return spline.stratified_u((500, 3), num_samples, jitter, dtype=torch.float64, generator=generator)

    u = draw()
    assert u.shape == (500, 3, num_samples) and u.dtype == torch.float64
    k = torch.arange(num_samples, dtype=torch.float64)
    assert (u >= k / num_samples).all() and (u < (k + 1) / num_samples).all()
    xi = u * num_samples - k
    spread_within_ray = xi.amax(-1) - xi.amin(-1)
    if jitter == "single":
        assert spread_within_ray.max() < 1e-12
    else:
        assert spread_within_ray.min() > 0.1
    # Different rays get different offsets, covering [0, 1) roughly uniformly.
    assert stats.kstest(xi[..., 0].ravel().numpy(), "uniform").pvalue > 1e-3
    assert torch.equal(u, draw())  # reproducible with a seeded generator
    # The offsets are drawn in float64, not float32 then widened (every float32 value survives the round trip).
    assert (xi.float().double() != xi).float().mean() > 0.99


# ----------------------------------------------------------------------------------------------------------
# RVS.md §5.6: the Monte Carlo colour estimate is unbiased
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("jitter", ["independent", "single"])
def test_monte_carlo_colour_is_unbiased(interpolation, jitter):
    """Ĉ = y_f · mean_k c(t_k) + (1 - y_f) c_bg averages to ∫ c dF + (1 - y_f) c_bg within 4 standard errors."""
    colour, background, draws = (lambda t: 0.5 + 0.5 * np.sin(3.0 * t)), 0.2, 20000
    knots, densities = KS_KNOTS.double(), KS_DENSITIES.double() / 2
    k, d = knots.numpy(), densities.numpy()
    grid = np.linspace(k[0], k[-1], 200001)
    cdf = ref_opacity(k, d, interpolation, grid)
    expected = np.sum(colour(0.5 * (grid[1:] + grid[:-1])) * np.diff(cdf)) + (1 - cdf[-1]) * background

    u = spline.stratified_u((draws,), 4, jitter, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    samples = spline.sample(knots.expand(draws, -1), densities.expand(draws, -1), u, interpolation).numpy()
    y_f = spline.total_opacity(knots, densities, interpolation).item()
    estimates = y_f * colour(samples).mean(-1) + (1 - y_f) * background
    standard_error = estimates.std() / np.sqrt(draws)
    assert 0 < standard_error < 1e-3
    assert abs(estimates.mean() - expected) < 4 * standard_error


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_termination_density_is_the_derivative_of_the_opacity(interpolation):
    """p(t) = dF/dt by a central finite difference of the numpy opacity, and zero off the ray."""
    knots, densities = KS_KNOTS.double(), KS_DENSITIES.double()
    k, d = knots.numpy(), densities.numpy()
    t = np.linspace(k[0] + 0.013, k[-1] - 0.013, 97)
    t = t[np.min(np.abs(t[:, None] - k[None, :]), axis=1) > 2e-3]  # away from kinks at the knots
    h = 1e-4
    reference = (ref_opacity(k, d, interpolation, t + h) - ref_opacity(k, d, interpolation, t - h)) / (2 * h)
    p = spline.termination_density(torch.tensor(t), knots, densities, interpolation).numpy()
    np.testing.assert_allclose(p, reference, rtol=2e-4, atol=1e-6)
    outside = spline.termination_density(torch.tensor([k[0] - 1.0, k[-1] + 1.0]), knots, densities, interpolation)
    assert torch.equal(outside, torch.zeros(2, dtype=torch.float64))


def importance_estimates(densities: torch.Tensor, padding: float, interpolation: str, draws: int, colour):
    """``draws`` estimates Σ_k w_k c(t_k) of ∫ c dF from 4 importance-weighted stratified samples each, and each
    draw's own copy of the densities ``[draws, m1]`` (a leaf, so one backward gives every draw's gradient)."""
    u = spline.stratified_u((draws,), 4, "independent", dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    per_draw = densities.expand(draws, -1).clone().requires_grad_()
    samples, weights = spline.importance_sample(KS_KNOTS.double().expand(draws, -1), per_draw, u, padding, interpolation)
    return (weights * colour(samples)).sum(-1), per_draw


def ref_colour_integral(densities: np.ndarray, interpolation: str, colour) -> float:
    """∫ c dF by a 200k-interval midpoint rule on the numpy opacity."""
    grid = np.linspace(KS_KNOTS[0].item(), KS_KNOTS[-1].item(), 200001)
    return float(np.sum(colour(0.5 * (grid[1:] + grid[:-1])) * np.diff(ref_opacity(KS_KNOTS.numpy(), densities, interpolation, grid))))


COLOUR = (lambda t: 0.5 + 0.5 * np.sin(3.0 * t)), (lambda t: 0.5 + 0.5 * torch.sin(3.0 * t))
"""A colour along the ray, for numpy and for torch."""


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("thinning, padding", [(2, 0.5), (2, 2.0), (20, 0.05)])  # the last: y_f ≈ 0.24, y_q ≈ 0.38
def test_importance_weighted_colour_is_unbiased(interpolation, thinning, padding):
    """Sampling the padded spline and weighting by p / q: the mean estimate is ∫ c dF (numpy) within 4 s.e."""
    base = (KS_DENSITIES.double() / thinning).numpy()
    estimates, _ = importance_estimates(torch.tensor(base), padding, interpolation, 20000, COLOUR[1])
    standard_error = estimates.std().item() / np.sqrt(len(estimates))
    assert abs(estimates.mean().item() - ref_colour_integral(base, interpolation, COLOUR[0])) < 4 * standard_error


@pytest.mark.parametrize("padding", [0.5, 2.0])
def test_importance_weighted_gradient_is_unbiased_on_a_linear_spline(padding):
    """The mean gradient with respect to each knot density is the finite difference of ∫ c dF (numpy), within 4 s.e.
    (Linear spline only: with a constant one, p / q jumps where a sample crosses a knot, which a pathwise gradient
    does not see.)"""
    base, h = (KS_DENSITIES.double() / 2).numpy(), 1e-5
    estimates, per_draw = importance_estimates(torch.tensor(base), padding, "linear", 20000, COLOUR[1])
    estimates.sum().backward()
    for j in range(len(base)):
        up, down = base.copy(), base.copy()
        up[j] += h
        down[j] -= h
        reference = (ref_colour_integral(up, "linear", COLOUR[0]) - ref_colour_integral(down, "linear", COLOUR[0])) / (2 * h)
        gradient = per_draw.grad[:, j]
        error = gradient.std().item() / np.sqrt(len(gradient))
        assert abs(gradient.mean().item() - reference) < 4 * error + 1e-4, (j, gradient.mean().item(), reference, error)


def test_importance_weights_are_bounded_and_sample_the_padded_spline():
    """Every weight is at most e^(padding L) / n, and the samples follow the padded spline (KS test)."""
    padding, n, draws = 0.5, 4, 5000
    knots, densities = KS_KNOTS.double(), KS_DENSITIES.double()
    u = spline.stratified_u((draws,), n, "independent", dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    samples, weights = spline.importance_sample(knots.expand(draws, -1), densities.expand(draws, -1), u, padding)
    length = (knots[-1] - knots[0]).item()
    assert weights.max().item() <= np.exp(padding * length) / n
    first_stratum = samples[:, 0].numpy()  # u in [0, 1/4): the padded CDF's first quarter
    padded_cdf = ref_opacity(knots.numpy(), densities.numpy() + padding, "linear", first_stratum)
    y_q = ref_total_opacity(knots.numpy(), densities.numpy() + padding, "linear")
    assert stats.kstest(4 * padded_cdf / y_q, "uniform").pvalue > 1e-3


# ----------------------------------------------------------------------------------------------------------
# 9. Doctests, 10. CUDA
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_knots, num_densities", [(1, 1), (0, 0), (4, 3)])
def test_malformed_spline_is_rejected_with_a_clear_error(num_knots, num_densities):
    knots, densities = torch.linspace(0, 1, num_knots), torch.ones(num_densities)
    for call in (
        lambda: spline.sample(knots, densities, torch.tensor([0.5])),
        lambda: spline.integral(torch.tensor([0.5]), knots, densities),
        lambda: spline.interval_weights(knots, densities),
    ):
        with pytest.raises(ValueError, match="at least 2 knots and one density per knot"):
            call()


def test_doctests():
    result = doctest.testmod(spline)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(interpolation, dtype):
    knots, densities = random_rays((4, 5), 17, dtype=dtype, seed=9)
    u = spline.stratified_u((4, 5), 32, "independent", dtype=dtype, generator=torch.Generator().manual_seed(9))

    def evaluate(device):
        k = knots.to(device).requires_grad_(True)
        d = densities.to(device).requires_grad_(True)
        samples = spline.sample(k, d, u.to(device), interpolation)
        opacity = spline.opacity(samples.detach(), k, d, interpolation)
        values = (samples, opacity, spline.knot_integrals(k, d, interpolation))
        grads = torch.autograd.grad(samples.sum(), (k, d))
        return [x.cpu() for x in (*values, *grads)]

    for on_cpu, on_cuda in zip(evaluate("cpu"), evaluate("cuda")):
        torch.testing.assert_close(on_cuda, on_cpu)


@pytest.mark.parametrize("t", [1.0, 2.0])
def test_integral_through_an_empty_last_bin(t):
    """A ray ending in a duplicated knot (an empty last bin, where t = t_m falls): S = the closed-form trapezoids."""
    knots = torch.tensor([0.0, 1.0, 1.0]) * t
    densities = torch.tensor([1.0, 3.0, 5.0])
    value = spline.integral(torch.tensor([t]), knots, densities)
    assert value.item() == pytest.approx(0.5 * (1.0 + 3.0) * t)  # the empty bin adds nothing


# ----------------------------------------------------------------------------------------------------------
# 11. Samples of the interval histogram mixed with the uniform (sample_mixture)
# ----------------------------------------------------------------------------------------------------------


def ref_mixture_cdf(knots, densities, interpolation: str, share: float, t) -> np.ndarray:
    """Q(t) = (1 - λ) H(t) + λ (t - t_0) / L, H the termination CDF F / y_f at the knots, linear between them."""
    k, d, t = (np.asarray(x, np.float64) for x in (knots, densities, t))
    at_knots = ref_opacity(k, d, interpolation, k) / ref_total_opacity(k, d, interpolation)
    return (1 - share) * np.interp(t, k, at_knots) + share * (t - k[0]) / (k[-1] - k[0])


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("share", [0.0, 0.5, 0.9])
def test_mixture_samples_hit_their_quantiles(interpolation, share):
    """Q_ref(t_k) = u_k for float64 samples of random batched rays, which stay sorted and inside the ray."""
    knots, densities = random_rays((2, 3), 9, seed=4)
    u = spline.stratified_u((2, 3), 32, "independent", dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    samples = spline.sample_mixture(knots, densities, u, share, interpolation)
    assert (samples >= knots[..., :1]).all() and (samples <= knots[..., -1:]).all()
    assert (torch.diff(samples) > 0).all()
    for k, d, uk, tk in rays(knots, densities, u, samples):
        np.testing.assert_allclose(ref_mixture_cdf(k, d, interpolation, share, tk), uk, atol=1e-9)


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_mixture_samples_follow_the_mixture(interpolation):
    """20000 draws of one ray follow Q_ref (KS), and neither the termination distribution itself nor the histogram
    without its uniform share."""
    u = torch.sort(torch.rand(20000, generator=torch.Generator().manual_seed(3), dtype=torch.float64)).values
    knots, densities = KS_KNOTS.double(), KS_DENSITIES.double()
    samples = spline.sample_mixture(knots, densities, u, 0.4, interpolation).numpy()
    k, d = knots.numpy(), densities.numpy()
    grid = np.linspace(k[0], k[-1], 100001)
    exact = ref_opacity(k, d, interpolation, grid) / ref_total_opacity(k, d, interpolation)
    for cdf, expected_to_fit in [
        (ref_mixture_cdf(k, d, interpolation, 0.4, grid), True),
        (ref_mixture_cdf(k, d, interpolation, 0.0, grid), False),
        (0.6 * exact + 0.4 * (grid - k[0]) / (k[-1] - k[0]), False),  # the exact CDF within the intervals
    ]:
        pvalue = stats.kstest(samples, lambda x: np.interp(x, grid, cdf)).pvalue
        assert pvalue > 1e-3 if expected_to_fit else pvalue < 1e-6


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("case", ["surface_start", "surface_gap", "y_f_nearly_one", "one_bin", "duplicated_knots"])
def test_mixture_gradients_match_finite_differences(case, interpolation):
    """∂t_k/∂log s_j and ∂t_k/∂t_i equal central differences of the samples."""
    knots, densities = (torch.tensor(x, dtype=torch.float64) for x in FLOOR_CASES[case])

    def draw(k, d):
        return spline.sample_mixture(k, d, FLOOR_U, 0.3, interpolation)

    samples = draw(knots, densities).numpy()
    by_knot, by_density = torch.autograd.functional.jacobian(draw, (knots, densities))
    by_density = by_density * densities
    k = knots.numpy()
    inside = np.abs(samples[:, None] - k[None, :]).min(axis=1) > 1e-5  # the sample's interval does not change
    assert inside.sum() >= 5
    step = 1e-6
    for j in range(len(k)):
        bump = torch.zeros_like(densities)
        bump[j] = step
        plus, minus = (draw(knots, densities * torch.exp(sign * bump)).numpy() for sign in (1, -1))
        np.testing.assert_allclose(by_density[inside, j].numpy(), ((plus - minus) / (2 * step))[inside], rtol=1e-5, atol=1e-8)
        if case != "duplicated_knots":  # moving one of two equal knots reorders them
            plus, minus = (draw(knots + sign * bump, densities).numpy() for sign in (1, -1))
            np.testing.assert_allclose(by_knot[inside, j].numpy(), ((plus - minus) / (2 * step))[inside], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", EDGE_CASES)
def test_mixture_degenerate_rays_are_finite_and_bounded(case, dtype, interpolation):
    """Finite sorted samples inside the ray, and |∂t_k/∂log s_j| <= (1 - λ) L / λ since the mixture's density is at
    least λ / L."""
    share = 0.25
    knots = torch.tensor(EDGE_CASES[case][0], dtype=dtype)
    densities = torch.tensor(EDGE_CASES[case][1], dtype=dtype)
    u = EDGE_U.to(dtype)
    samples = spline.sample_mixture(knots, densities, u, share, interpolation)
    by_knot, by_density = torch.autograd.functional.jacobian(
        lambda k, d: spline.sample_mixture(k, d, u, share, interpolation), (knots, densities)
    )
    for name, x in [("samples", samples), ("d/dknots", by_knot), ("d/ddensities", by_density)]:
        assert torch.isfinite(x).all(), f"{name}: {x}"
    assert (samples >= knots[0]).all() and (samples <= knots[-1]).all()
    assert (torch.diff(samples) >= 0).all()
    length = float(knots[-1] - knots[0])
    assert (by_density * densities).abs().max() <= (1 - share) * length / share * 1.001 + 1e-6


def test_mixture_of_an_empty_ray_is_uniform():
    knots = torch.tensor([0.5, 1.0, 2.5, 4.5])
    samples = spline.sample_mixture(knots, torch.zeros(4), EDGE_U, 0.3)
    torch.testing.assert_close(samples, 0.5 + 4.0 * EDGE_U)


def test_mixture_narrow_bins_give_finite_gradients_in_float32():
    """Nearly coincident knots (bins of width 1e-7 among width-1e-1 ones, as proposal samples bunch up) and densities
    over twelve orders of magnitude: every sample and gradient is finite, and the samples are sorted."""
    generator = torch.Generator().manual_seed(5)
    base = torch.rand(256, 33, generator=generator)
    base[:, 10:20] = 0.5 + 1e-7 * torch.rand(256, 10, generator=generator)
    knots = torch.sort(base, dim=-1).values.requires_grad_()
    densities = (10.0 ** (12 * torch.rand(256, 33, generator=generator) - 6)).requires_grad_()
    u = spline.stratified_u((256,), 25, "independent", generator=generator)
    samples = spline.sample_mixture(knots, densities, u, 0.5)
    (samples * torch.randn(samples.shape, generator=generator)).sum().backward()
    assert torch.isfinite(samples).all() and torch.isfinite(knots.grad).all() and torch.isfinite(densities.grad).all()
    assert (torch.diff(samples) >= 0).all()
