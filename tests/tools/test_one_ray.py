"""Tests of the one-ray study (paper Fig. 1 and Fig. 2): estimators, the variance conclusion, and ``rvs-1d``."""

import csv
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from rvs_nerfstudio.tools import one_ray

COLOUR = one_ray.random_smooth(0)


def test_radiance_is_in_unit_interval():
    values = COLOUR(torch.linspace(0, 1, 10_001, dtype=torch.float64))
    assert values.min() >= 0 and values.max() <= 1 and values.std() > 0.05


@pytest.mark.parametrize("field", one_ray.FIELDS)
def test_reference_matches_independent_quadrature(field):
    """The core-based quadrature equals a numpy trapezoid integral of c(t) σ̂(t) exp(-∫σ̂) on a finer grid."""
    knots, densities = one_ray.density_field(field)
    t = np.linspace(0, 1, 1_000_001)
    sigma = np.interp(t, knots.numpy(), densities.numpy())
    optical_depth = np.concatenate([[0], np.cumsum(0.5 * (sigma[1:] + sigma[:-1]) * np.diff(t))])
    integrand = COLOUR(torch.from_numpy(t)).numpy() * sigma * np.exp(-optical_depth)
    expected = np.sum(0.5 * (integrand[1:] + integrand[:-1]) * np.diff(t))
    assert one_ray.reference_colour(knots, densities, COLOUR).item() == pytest.approx(expected, abs=1e-6)


def _assert_unbiased(knots, densities, num_samples):
    reference = one_ray.reference_colour(knots, densities, COLOUR)
    generator = torch.Generator().manual_seed(0)
    num_draws = 100_000
    for name, estimator in one_ray.ESTIMATORS.items():
        estimates = estimator(knots, densities, COLOUR, num_draws, num_samples, generator)
        assert estimates.shape == (num_draws,)
        standard_error = estimates.std() / num_draws**0.5
        assert (estimates.mean() - reference).abs() < 4 * standard_error, name


@pytest.mark.parametrize("field", one_ray.FIELDS)
@pytest.mark.parametrize("num_samples", [1, 4, 16])
def test_estimators_are_unbiased(field, num_samples):
    _assert_unbiased(*one_ray.density_field(field), num_samples)


def test_estimators_are_unbiased_on_a_ray_of_length_three():
    """Catches a missing (t_f - t_n) factor, which the unit-length fields cannot."""
    knots, densities = one_ray.density_field("Glass and Wall")
    _assert_unbiased(2 + 3 * knots, densities / 3, 4)


@pytest.mark.parametrize("field", ["Wall", "Glass and Wall"])
def test_stratified_rvs_beats_stratified_t(field):
    """The paper's Fig. 2 conclusion: on surfaces, stratified RVS has a far lower std than stratified t."""
    ks = (8, 32, 128)
    rows = one_ray.estimator_study(field, ks, 2000, COLOUR, seed=0)
    ratios = {k: one_ray.std_ratio(rows, field, k) for k in ks}
    print(f"{field}: std(stratified t) / std(stratified RVS) =", {k: round(r, 1) for k, r in ratios.items()})
    assert min(ratios.values()) > 50


def test_density_recovery_fits_target():
    result = one_ray.recover_density()
    assert result.losses[-30:].mean() < 0.01 * result.losses[:10].mean()
    assert torch.corrcoef(torch.stack([result.target, result.learned]))[0, 1] > 0.95


def test_cli_writes_figures_and_csv_and_refuses_to_overwrite(tmp_path, monkeypatch, capsys):
    argv = ["rvs-1d", "--output-dir", str(tmp_path), "--num-draws", "50", "--ks", "1", "8", "--density-recovery"]
    monkeypatch.setattr(sys, "argv", argv)
    one_ray.entrypoint()

    figures = {one_ray.FIG1: one_ray.FIG1_SIZE, one_ray.FIG2: one_ray.FIG2_SIZE, one_ray.FIG3: one_ray.FIG3_SIZE}
    for name, (width, height) in figures.items():
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG"
            assert image.size == (round(width * one_ray.DPI), round(height * one_ray.DPI))
            assert np.asarray(image.convert("L")).std() > 5
    with open(tmp_path / one_ray.CSV, newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["field", "estimator", "K", "mean", "std", "reference"]
    expected = {(f, e, k) for f in one_ray.FIELDS for e in one_ray.ESTIMATORS for k in ("1", "8")}
    assert len(rows) == len(expected) and {(row["field"], row["estimator"], row["K"]) for row in rows} == expected
    output = capsys.readouterr().out
    assert "std(stratified t) / std(stratified RVS)" in output and "K=8" in output

    written = (tmp_path / one_ray.FIG1).stat().st_mtime_ns
    with pytest.raises(SystemExit, match="--overwrite"):
        one_ray.entrypoint()
    assert (tmp_path / one_ray.FIG1).stat().st_mtime_ns == written
