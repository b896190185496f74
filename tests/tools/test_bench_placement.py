"""``rvs_nerfstudio.tools.bench.placement``: the field's termination interval and the shares of samples around it."""

from __future__ import annotations

import pytest
import torch

from rvs_nerfstudio.tools.bench.placement import edge_shares, termination_interval


def test_termination_interval_is_the_10_and_90_percent_quantile_of_the_weights():
    """Three rays on a grid of 1000 midpoints: weight spread evenly over [0.2, 0.6) (quantiles 0.24 and 0.56), all of
    it in one sample, and half of it in each of two samples (both quantiles land on the first and last)."""
    spacing = ((torch.arange(1000) + 0.5) / 1000).expand(3, 1000).contiguous()
    weights = torch.zeros(3, 1000)
    weights[0, 200:600] = 0.002
    weights[1, 700] = 0.9
    weights[2, [100, 900]] = 0.3
    interval = termination_interval(spacing, weights)
    expected = torch.tensor([[0.24, 0.56], [0.7005, 0.7005], [0.1005, 0.9005]])
    torch.testing.assert_close(interval, expected, atol=1.01e-3, rtol=0)


def test_edge_shares_count_the_edges_inside_and_in_front_of_each_ray_interval():
    interval = torch.tensor([[0.2, 0.4], [0.5, 0.9], [0.0, 0.1]])
    edges = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5], [0.1, 0.2, 0.3, 0.4, 0.95], [0.0, 0.05, 0.5, 0.6, 0.7]])
    shares = edge_shares(edges, interval)
    assert shares["edges_inside"] == pytest.approx(5 / 15)  # 3 (bounds included) + 0 + 2
    assert shares["edges_in_front"] == pytest.approx(5 / 15)  # 1 + 4 + 0
    assert shares["interval_width"] == pytest.approx(0.2)  # the median of 0.2, 0.4 and 0.1
