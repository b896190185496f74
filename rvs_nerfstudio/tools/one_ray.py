"""One-ray study of reparameterized volume sampling: the paper's Fig. 1 and Fig. 2 (``rvs-1d``).

Reproduces the 1-D experiments of Morozov et al., *Differentiable Rendering with Reparameterized
Volume Sampling*, AISTATS 2024 (arXiv:2302.10970), computed with the project's sampling core
:mod:`rvs_nerfstudio.core.spline`:

- Fig. 1: a random density on a ray, its piecewise-constant and piecewise-linear approximations on
  8 knots, and samples drawn by inverting each approximate opacity;
- Fig. 2: the standard deviation of four estimators of the colour :math:`C = \\int c\\, dF` as the
  sample count grows, on three density fields ("Foggy", "Glass and Wall", "Wall");
- Fig. 3 (optional): recovering a density by matching random statistics of its reparameterized samples.

Everything is float64 on the CPU. ``rvs-1d --help`` lists the options.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Tuple

import torch
import tyro
from jaxtyping import Float
from matplotlib.figure import Figure
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from torch import Tensor

from rvs_nerfstudio.core import spline
from rvs_nerfstudio.tools import reports

Colour = Callable[[Tensor], Tensor]
Estimator = Callable[[Tensor, Tensor, Colour, int, int, torch.Generator], Tensor]

FIELDS = ("Foggy", "Glass and Wall", "Wall")
NUM_KNOTS = 256
# Per field: (t of the first knot, number of knots, s) for each layer; s = -1 elsewhere.
_LAYERS = {
    "Foggy": ((0.1, 205, 0.1),),
    "Glass and Wall": ((0.15, 2, 0.2), (0.18, 2, 0.2), (0.75, 3, 4.0)),
    "Wall": ((0.5, 3, 4.0),),
}
RATIO_KS = (8, 32, 256)
DPI = 100
FIG1_SIZE = (10.0, 6.5)
FIG2_SIZE = (12.0, 6.5)
FIG3_SIZE = (10.0, 4.0)
FIG1, FIG2, FIG3 = "fig1_spline_inversion.png", "fig2_estimator_std.png", "fig3_density_recovery.png"
CSV = "fig2_estimator_std.csv"
_F64 = torch.float64


def density_field(name: str) -> Tuple[Float[Tensor, "256"], Float[Tensor, "256"]]:
    """Knots on [0, 1] and densities softplus(64 s) of one of :data:`FIELDS` (float64)."""
    knots = torch.linspace(0, 1, NUM_KNOTS, dtype=_F64)
    s = torch.full_like(knots, -1.0)
    for start, count, value in _LAYERS[name]:
        first = round(start * (NUM_KNOTS - 1))
        s[first : first + count] = value
    return knots, torch.nn.functional.softplus(64 * s)


def random_smooth(seed: int, num_waves: int = 4, max_frequency: float = 20.0) -> Colour:
    """A seeded random smooth function of ``t`` (any shape, kept) with values in [0, 1].

    :math:`\\tfrac12 + \\tfrac12 \\sum_j a_j \\cos(\\omega_j t + \\varphi_j) / \\sum_j a_j` with random
    :math:`a_j \\in [0.5, 1.5)`, :math:`\\omega_j \\in [2, \\omega_{max})`, :math:`\\varphi_j \\in [0, 2\\pi)`.
    """
    amplitude, frequency, phase = torch.rand((3, num_waves), dtype=_F64, generator=torch.Generator().manual_seed(seed))
    amplitude, frequency, phase = 0.5 + amplitude, 2 + (max_frequency - 2) * frequency, 2 * math.pi * phase
    return lambda t: 0.5 + 0.5 * (amplitude * torch.cos(t[..., None] * frequency + phase)).sum(-1) / amplitude.sum()


def _interpolate(t: Tensor, knots: Float[Tensor, "m1"], values: Float[Tensor, "m1"]) -> Tensor:
    """Piecewise-linear interpolation of ``values`` at 1-D ``knots``: the linear spline's :math:`\\hat\\sigma(t)`."""
    i = (torch.searchsorted(knots, t.contiguous(), right=True) - 1).clamp(0, knots.numel() - 2)
    return torch.lerp(values[i], values[i + 1], (t - knots[i]) / (knots[i + 1] - knots[i]))


def reference_colour(
    knots: Float[Tensor, "m1"], densities: Float[Tensor, "m1"], colour: Colour, num_points: int = 100_000
) -> Float[Tensor, ""]:
    """Quadrature :math:`C = \\sum c(t_\\text{mid})\\, \\Delta F` of the linear spline (no background)."""
    grid = torch.linspace(float(knots[0]), float(knots[-1]), num_points + 1, dtype=_F64)
    return (colour(0.5 * (grid[1:] + grid[:-1])) * spline.opacity(grid, knots, densities).diff()).sum()


def _importance_in_t(fraction: Float[Tensor, "draws K"], knots: Tensor, densities: Tensor, colour: Colour) -> Tensor:
    """:math:`\\hat C = (t_f - t_n)\\, \\tfrac1K \\sum_k c(t_k)\\, p(t_k)` at :math:`t_k = t_n + f_k (t_f - t_n)`."""
    length = knots[-1] - knots[0]
    t = knots[0] + fraction * length
    p = _interpolate(t, knots, densities) * spline.transmittance(t.flatten(), knots, densities).view_as(t)
    return length * (colour(t) * p).mean(-1)


def _reparameterized(u: Float[Tensor, "draws K"], knots: Tensor, densities: Tensor, colour: Colour) -> Tensor:
    """:math:`\\hat C = y_f\\, \\tfrac1K \\sum_k c(t_k)` at the samples :math:`F(t_k) = u_k y_f`."""
    t = spline.sample(knots, densities, u.flatten()).view_as(u)
    return spline.total_opacity(knots, densities) * colour(t).mean(-1)


def _uniform(num_draws: int, num_samples: int, generator: torch.Generator | None) -> Float[Tensor, "draws K"]:
    """Independent uniform fractions in [0, 1)."""
    return torch.rand((num_draws, num_samples), dtype=_F64, generator=generator)


def _stratified(num_draws: int, num_samples: int, generator: torch.Generator | None) -> Float[Tensor, "draws K"]:
    """Stratified fractions :math:`(k + \\xi_k) / K`, one jitter per stratum."""
    return spline.stratified_u((num_draws,), num_samples, "independent", dtype=_F64, generator=generator)


def _estimator(fractions: Callable, estimate: Callable, doc: str) -> Estimator:
    """An estimator: ``num_draws`` estimates of C, each from ``num_samples`` ``fractions`` fed to ``estimate``."""

    def estimator(
        knots: Float[Tensor, "m1"],
        densities: Float[Tensor, "m1"],
        colour: Colour,
        num_draws: int,
        num_samples: int,
        generator: torch.Generator | None = None,
    ) -> Float[Tensor, "draws"]:
        return estimate(fractions(num_draws, num_samples, generator), knots, densities, colour)

    estimator.__doc__ = doc
    return estimator


ESTIMATORS: Dict[str, Estimator] = {
    "uniform t": _estimator(_uniform, _importance_in_t, "1: uniform t weighted by p(t)(t_f - t_n)."),
    "stratified t": _estimator(_stratified, _importance_in_t, "2: as 1, with t stratified on [t_n, t_f]."),
    "RVS": _estimator(_uniform, _reparameterized, "3: samples from the density (independent u), y_f mean c(t_k)."),
    "stratified RVS": _estimator(_stratified, _reparameterized, "4: as 3, with u stratified on [0, 1]."),
}
"""The paper's four colour estimators of Fig. 2, by name."""


class StudyRow(NamedTuple):
    """One line of ``fig2_estimator_std.csv``: an estimator's mean and std over draws, and the quadrature value."""

    field: str
    estimator: str
    K: int
    mean: float
    std: float
    reference: float


def estimator_study(
    field: str, ks: Tuple[int, ...], num_draws: int, colour: Colour, seed: int, on_k: Callable[[], None] = lambda: None
) -> List[StudyRow]:
    """Mean and std of every estimator on ``field`` for each K in ``ks`` (calls ``on_k`` after each K)."""
    knots, densities = density_field(field)
    reference = reference_colour(knots, densities, colour).item()
    rows = []
    for k in ks:
        generator = torch.Generator().manual_seed(seed + k)
        for name, estimator in ESTIMATORS.items():
            estimates = estimator(knots, densities, colour, num_draws, k, generator)
            rows.append(StudyRow(field, name, k, estimates.mean().item(), estimates.std().item(), reference))
        on_k()
    return rows


def std_ratio(rows: List[StudyRow], field: str, k: int) -> float:
    """std(stratified t) / std(stratified RVS) for ``field`` at K = ``k``."""
    std = {row.estimator: row.std for row in rows if row.field == field and row.K == k}
    return std["stratified t"] / std["stratified RVS"]


class DensityRecovery(NamedTuple):
    """Result of :func:`recover_density`."""

    knots: Float[Tensor, "m1"]
    target: Float[Tensor, "m1"]
    learned: Float[Tensor, "m1"]
    losses: Float[Tensor, "steps"]


def recover_density(
    num_steps: int = 400, num_samples: int = 256, num_statistics: int = 32, seed: int = 0
) -> DensityRecovery:
    """Fit a spline density softplus(θ) at fixed knots to a target from random statistics of its samples.

    Each step draws frequencies ω and phases φ and matches the reparameterized estimates
    :math:`y_f\\, \\text{mean}_k \\cos(\\omega t_k + \\varphi)` of :math:`\\int \\cos(\\omega t + \\varphi)\\, dF`, and
    :math:`y_f` itself, to the target's quadrature values (MSE, Adam). Gradients reach θ through
    :math:`y_f` and through the sample positions :math:`t_k`.
    """
    generator = torch.Generator().manual_seed(seed)
    knots = torch.linspace(0, 1, 32, dtype=_F64)
    target = 8 * torch.exp(-(((knots - 0.3) / 0.05) ** 2)) + 5 * torch.exp(-(((knots - 0.65) / 0.08) ** 2)) + 0.2
    grid = torch.linspace(0, 1, 4097, dtype=_F64)
    middles, target_mass = 0.5 * (grid[1:] + grid[:-1]), spline.opacity(grid, knots, target).diff()
    target_opacity = spline.total_opacity(knots, target)
    logits = torch.zeros_like(knots, requires_grad=True)
    optimiser = torch.optim.Adam([logits], lr=0.1)
    losses = []
    for _ in range(num_steps):
        frequency, phase = torch.rand((2, num_statistics, 1), dtype=_F64, generator=generator)
        frequency, phase = 40 * frequency, 2 * math.pi * phase
        densities = torch.nn.functional.softplus(logits)
        u = spline.stratified_u((), num_samples, "independent", dtype=_F64, generator=generator)
        t = spline.sample(knots, densities, u)
        opacity = spline.total_opacity(knots, densities)
        estimate = opacity * torch.cos(frequency * t + phase).mean(-1)
        exact = (torch.cos(frequency * middles + phase) * target_mass).sum(-1)
        loss = (estimate - exact).square().mean() + (opacity - target_opacity).square().sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return DensityRecovery(knots, target, torch.nn.functional.softplus(logits).detach(), torch.tensor(losses))


def plot_spline_inversion(seed: int, num_knots: int = 8, num_samples: int = 6) -> Figure:
    """Fig. 1: a random density, its constant and linear splines, their opacities and inverted samples."""
    smooth = random_smooth(seed + 1)
    fine = torch.linspace(0, 1, 2001, dtype=_F64)
    knots = torch.linspace(0, 1, num_knots, dtype=_F64)
    fine_density, knot_density = 12 * smooth(fine) ** 3, 12 * smooth(knots) ** 3
    u = _stratified(1, num_samples, torch.Generator().manual_seed(seed))[0]
    fig = Figure(figsize=FIG1_SIZE, dpi=DPI, layout="constrained")
    axes = fig.subplots(2, 2, sharex=True)
    for column, (interpolation, hue) in enumerate((("constant", "tab:orange"), ("linear", "tab:blue"))):
        top, bottom = axes[:, column]
        top.plot(fine, fine_density, color="black", label="density σ(t)")
        if interpolation == "constant":
            top.stairs(knot_density[:-1], knots, color=hue, label="piecewise constant")
        else:
            top.plot(knots, knot_density, color=hue, label="piecewise linear")
        top.plot(knots, knot_density, "o", color=hue, markersize=4)
        top.set(title=f"{interpolation} spline on {num_knots} knots", ylabel="density")
        top.legend(loc="upper right")
        bottom.plot(fine, spline.opacity(fine, fine, fine_density), color="black", label="F(t) of σ")
        bottom.plot(fine, spline.opacity(fine, knots, knot_density, interpolation), color=hue, label="F(t) of spline")
        opacity = spline.total_opacity(knots, knot_density, interpolation)
        samples = spline.sample(knots, knot_density, u, interpolation)
        for level, t in zip(u * opacity, samples):
            bottom.plot([0, t, t], [level, level, 0], color=hue, linestyle="--", linewidth=0.8)
        bottom.plot(samples, torch.zeros_like(samples), "|", color=hue, markersize=14, markeredgewidth=2)
        bottom.set(xlabel="t", ylabel="opacity F(t)", ylim=(-0.04, 1.02), xlim=(0, 1))
        bottom.legend(loc="lower right")
    return fig


def plot_estimator_std(rows: List[StudyRow], colour: Colour) -> Figure:
    """Fig. 2: each field's opacity and radiance (top) and each estimator's std against K (bottom)."""
    fine = torch.linspace(0, 1, 4001, dtype=_F64)
    fig = Figure(figsize=FIG2_SIZE, dpi=DPI, layout="constrained")
    axes = fig.subplots(2, len(FIELDS), height_ratios=(1, 2))
    for column, field in enumerate(FIELDS):
        top, bottom = axes[:, column]
        top.plot(fine, spline.opacity(fine, *density_field(field)), color="black", label="opacity F(t)")
        top.plot(fine, colour(fine), color="tab:red", label="radiance c(t)")
        top.set(title=field, xlabel="t", ylim=(0, 1.05))
        for name in ESTIMATORS:
            curve = [(row.K, row.std) for row in rows if row.field == field and row.estimator == name]
            bottom.loglog(*zip(*curve), "o-", markersize=3, label=name)
        bottom.set(xlabel="samples per ray K", ylabel="std of the colour estimate")
        bottom.grid(True, which="both", alpha=0.3)
    axes[0, 0].legend(loc="upper left", fontsize="small")
    axes[1, 0].legend(loc="lower left", fontsize="small")
    return fig


def plot_density_recovery(result: DensityRecovery) -> Figure:
    """Fig. 3: target and recovered densities (left) and the training loss (right)."""
    fig = Figure(figsize=FIG3_SIZE, dpi=DPI, layout="constrained")
    left, right = fig.subplots(1, 2)
    left.plot(result.knots, result.target, color="black", label="target")
    left.plot(result.knots, result.learned, "--", color="tab:blue", label="recovered")
    left.set(xlabel="t", ylabel="density", title="density recovery")
    left.legend()
    right.semilogy(result.losses, color="tab:blue")
    right.set(xlabel="Adam step", ylabel="MSE of the statistics", title="loss")
    return fig


@dataclass(frozen=True)
class OneRayConfig:
    """Regenerate the paper's one-ray figures (Fig. 1 and Fig. 2) with the project's sampling core."""

    output_dir: Path = Path("outputs/rvs-1d")
    """Folder for the figures and the CSV."""
    seed: int = 0
    """Seed of the radiance, the Fig. 1 density and all sample draws."""
    num_draws: int = 2000
    """Independent estimates per estimator, field and K (the std is taken over them)."""
    ks: Tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    """Sample counts K per ray."""
    density_recovery: bool = False
    """Also run the toy density-recovery optimisation and write fig3_density_recovery.png."""
    overwrite: bool = False
    """Replace existing output files instead of refusing."""


def main(config: OneRayConfig) -> None:
    """Write the figures and the CSV into ``config.output_dir`` and print the std ratios."""
    names = (FIG1, FIG2, CSV) + ((FIG3,) if config.density_recovery else ())
    reports.refuse_to_overwrite("rvs-1d", (config.output_dir / name for name in names), config.overwrite, "--output-dir")
    config.output_dir.mkdir(parents=True, exist_ok=True)

    colour = random_smooth(config.seed)
    rows: List[StudyRow] = []
    with Progress() as progress:
        advance = partial(progress.advance, progress.add_task("Estimator study", total=len(FIELDS) * len(config.ks)))
        for field in FIELDS:
            rows += estimator_study(field, config.ks, config.num_draws, colour, config.seed, advance)
        if config.density_recovery:
            recovery = progress.add_task("Density recovery", total=1)
            plot_density_recovery(recover_density(seed=config.seed)).savefig(config.output_dir / FIG3)
            progress.advance(recovery)
    with open(config.output_dir / CSV, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(StudyRow._fields)
        writer.writerows(rows)
    plot_spline_inversion(config.seed).savefig(config.output_dir / FIG1)
    plot_estimator_std(rows, colour).savefig(config.output_dir / FIG2)

    ks = [k for k in RATIO_KS if k in config.ks]
    table = Table("field", *(f"K={k}" for k in ks))
    for field in FIELDS:
        table.add_row(field, *(f"{std_ratio(rows, field, k):.1f}" for k in ks))
    console = Console()
    console.print("std(stratified t) / std(stratified RVS):", table)
    console.print(f"Wrote {', '.join(names)} to {config.output_dir}")


def entrypoint() -> None:
    """Console script ``rvs-1d``."""
    main(tyro.cli(OneRayConfig))


if __name__ == "__main__":
    entrypoint()
