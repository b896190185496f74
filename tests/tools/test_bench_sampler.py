"""``rvs-bench sampler``: every sampler timed on the same inputs; the report and its overwrite check."""

from __future__ import annotations

import json
import math
import sys
import time

import pytest
import torch

from rvs_nerfstudio.tools.bench import cli
from rvs_nerfstudio.tools.bench.sampler import SamplerConfig, SamplerTiming, _timed_ms, forward_ratio, run_sampler_bench


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))])
def test_sampler_bench_smoke(device):
    config = SamplerConfig(num_rays=64, num_bins=32, num_samples=12, devices=(device,), min_run_time=0.01, rounds=1)
    timings = run_sampler_bench(config)
    samplers = [t.sampler for t in timings]
    assert samplers[:4] == ["PDFSampler", "weights+PDF", "RVS resample", "RVS core"]
    assert ("nerfacc" in samplers) == (device == "cuda")
    assert {t.bins_per_ray for t in timings} == {12}  # every sampler draws the same number of bins
    assert all(t.device == device and 0 < t.forward_ms < math.inf for t in timings)
    both = {t.sampler: t.forward_backward_ms for t in timings}
    assert both["PDFSampler"] is None and all(both[name] > 0 for name in ("weights+PDF", "RVS resample", "RVS core"))


def test_timer_measures_milliseconds_per_call():
    assert 20.0 <= _timed_ms(lambda: time.sleep(0.02), min_run_time=0.2) < 40.0  # ms per call; sleep may overshoot


def test_forward_ratio_divides_by_pdf_samplers_forward_on_the_same_device():
    timings = [SamplerTiming(device, name, ms, "", None, 8) for device, name, ms in
               [("cpu", "PDFSampler", 4.0), ("cpu", "RVS resample", 6.0), ("cuda", "PDFSampler", 1.0), ("cuda", "RVS resample", 3.0)]]
    assert (forward_ratio(timings, "cpu"), forward_ratio(timings, "cuda")) == (1.5, 3.0)


def test_rvs_bench_sampler_writes_its_report_and_refuses_to_overwrite(tmp_path, monkeypatch, capsys):
    args = ["rvs-bench", "sampler", "--num-rays", "32", "--num-bins", "16", "--num-samples", "8", "--devices", "cpu",
            "--min-run-time", "0.01", "--rounds", "1", "--output", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", args)
    cli.entrypoint()
    record = json.loads((tmp_path / "sampler.json").read_text())
    table = (tmp_path / "sampler.md").read_text()
    assert record["command"] == " ".join(args) and f"Command: `{' '.join(args)}`" in table
    assert [t["sampler"] for t in record["timings"]] == ["PDFSampler", "weights+PDF", "RVS resample", "RVS core"]
    forward = {t["sampler"]: t["forward_ms"] for t in record["timings"]}
    assert f"| cpu | RVS resample | 8 | {forward['RVS resample']:.2f} | {forward['RVS resample'] / forward['PDFSampler']:.2f}× |" in table
    assert "| cpu | PDFSampler | 8 |" in table and "| 1.00× | — | — (detached) |" in table
    assert table in capsys.readouterr().out.replace("\r", "")
    with pytest.raises(SystemExit, match="sampler.json exists; pass --overwrite"):
        cli.entrypoint()
