"""``rvs-bench`` and ``rvs-sampler-bench``: method strings, tables, output files, counting, repeatability."""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import pytest
import torch
from clitools import run_cli
from conftest import OfflineNerfactoConfig, build_model

from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig
from nerfstudio.data.datamanagers.parallel_datamanager import ParallelDataManagerConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from rvs_nerfstudio.bench import (
    BenchConfig,
    MethodSpec,
    check_output,
    cost_rows,
    cost_table,
    markdown_table,
    method_config,
    parse_method,
    run_bench,
    summarize,
    write_results,
)
from rvs_nerfstudio.method_configs import rvs_mc, rvs_nerfacto
from rvs_nerfstudio.rvs_mc import RVSMonteCarloModelConfig
from rvs_nerfstudio.rvs_nerfacto import RVSNerfactoModelConfig
from rvs_nerfstudio.runner import _EvalMeter, measure_peak_memory
from rvs_nerfstudio.sampler_bench import SamplerBenchConfig, forward_ratio, render_table, run_sampler_bench

# --- Method strings ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, name, options",
    [
        ("nerfacto", "nerfacto", ()),
        ("rvs-mc:K=8", "rvs-mc", (("num_radiance_samples", 8),)),
        ("rvs-mc:K=4,eval_num_radiance_samples=16", "rvs-mc", (("num_radiance_samples", 4), ("eval_num_radiance_samples", 16))),
        ("rvs-nerfacto:density_padding=0.5,density_interpolation=constant", "rvs-nerfacto",
         (("density_padding", 0.5), ("density_interpolation", "constant"))),
        ("rvs-nerfacto:use_distortion_loss=false", "rvs-nerfacto", (("use_distortion_loss", False),)),
    ],
)
def test_method_strings_parse(text, name, options):
    assert parse_method(text) == MethodSpec(label=text, name=name, model_options=options)


@pytest.mark.parametrize(
    "text, message",
    [("rvs-mc:K", "cannot read option"), (":K=8", "has no name"), ("rvs-mc:K=8,K=4", "twice"), ("rvs-mc:=3", "cannot read")],
)
def test_malformed_method_strings_exit_with_one_line(text, message):
    with pytest.raises(SystemExit, match=message) as error:
        parse_method(text)
    assert "\n" not in str(error.value)


def test_method_options_are_set_after_the_preset_on_a_copy():
    methods = {"rvs-mc": rvs_mc.config, "rvs-nerfacto": rvs_nerfacto.config}
    config = method_config(parse_method("rvs-mc:K=4,num_nerf_samples_per_ray=10,density_padding=3"), methods, "cpu-small")
    model = config.pipeline.model
    assert model.num_radiance_samples == 4
    assert model.num_nerf_samples_per_ray == 10  # the option wins over the preset's 24
    assert model.density_padding == 3.0 and isinstance(model.density_padding, float)
    assert model.num_levels == 8 and config.pipeline.datamanager.train_num_rays_per_batch == 512  # preset applied
    assert rvs_mc.config.pipeline.model.num_radiance_samples == 8  # the registered config is untouched
    assert rvs_mc.config.pipeline.model.num_levels == 16

    with pytest.raises(SystemExit, match="rvs-nerfacto's model has no option 'num_radiance_samples'"):
        method_config(parse_method("rvs-nerfacto:K=4"), methods, "cpu-small")
    with pytest.raises(SystemExit, match="unknown method 'nerfactoo'; registered: rvs-mc, rvs-nerfacto"):
        method_config(parse_method("nerfactoo"), methods, "cpu-small")


def test_every_method_draws_its_rays_in_the_main_process():
    nerfacto_like = copy.deepcopy(rvs_nerfacto.config)
    nerfacto_like.pipeline.datamanager = ParallelDataManagerConfig(
        dataparser=NerfstudioDataParserConfig(), train_num_rays_per_batch=4096, eval_num_rays_per_batch=2048, num_processes=1
    )
    config = method_config(parse_method("nerfacto"), {"nerfacto": nerfacto_like}, "full")
    datamanager = config.pipeline.datamanager
    assert type(datamanager) is VanillaDataManagerConfig and datamanager._target is VanillaDataManager
    assert isinstance(datamanager.dataparser, NerfstudioDataParserConfig)
    assert (datamanager.train_num_rays_per_batch, datamanager.eval_num_rays_per_batch) == (4096, 2048)
    assert type(nerfacto_like.pipeline.datamanager) is ParallelDataManagerConfig  # the registered config is untouched


# --- Tables and files ----------------------------------------------------------------------------------------


def fake_run(method: str, scene: str, seed: int, psnr: float, train_seconds: float = 100.0, psnr_at=None) -> dict:
    """A run of 500 steps; ``psnr_at`` maps training seconds to the held-out PSNR evaluated then."""
    train_seconds += seed
    psnr_at = psnr_at or {0.0: 10.0, train_seconds: psnr}
    return {
        "method": method, "scene": scene, "seed": seed, "psnr": psnr, "ssim": 0.9, "lpips": None,
        "train_seconds": train_seconds, "train_rays_per_sec": 5120.0, "render_rays_per_sec": 20000.0 * (1 + seed),
        "proposal_evals_per_ray": 96.0, "radiance_evals_per_ray": 8.0, "peak_memory_mib": 1500.0,
        "seconds_per_step": train_seconds / 500,
        "phase_seconds": {"proposal_forward": 5.0, "field_forward": 20.0, "field_backward": 30.0,
                          "proposal_backward": 10.0, "step": train_seconds},
        "evals": [{"step": i, "train_seconds": t, "metrics": {"psnr": p}} for i, (t, p) in enumerate(psnr_at.items())],
    }


def fake_results(runs) -> dict:
    meta = {
        "date": "2025-11-25T12:00:00+00:00", "command": "rvs-bench --seeds 0 1", "preset": "cpu-small", "steps": 500,
        "eval_every": 100, "methods": list(dict.fromkeys(run["method"] for run in runs)),
        "seeds": sorted({run["seed"] for run in runs}), "train_rays_per_batch": 512, "resolution": 64, "num_train": 40,
        "num_test": 8, "peak_memory_kind": "peak RSS of the main process during the run",
        "hardware": {"cpu": "AMD EPYC", "cpu_cores": 2, "torch_threads": 2, "device": "cpu", "torch": "2.x", "nerfstudio": "1.1.5"},
    }
    return {"meta": meta, "summary": summarize(runs), "runs": runs}


def test_summary_has_mean_and_sample_std_over_seeds():
    runs = [fake_run("rvs-mc:K=8", "object", 0, 25.0), fake_run("rvs-mc:K=8", "object", 1, 26.0),
            fake_run("nerfacto", "object", 0, 24.0)]
    mc, nerfacto = summarize(runs)
    assert (mc["method"], mc["seeds"], nerfacto["method"]) == ("rvs-mc:K=8", [0, 1], "nerfacto")
    assert mc["psnr"]["mean"] == pytest.approx(25.5) and mc["psnr"]["std"] == pytest.approx(math.sqrt(0.5))
    assert nerfacto["psnr"] == {"mean": 24.0, "std": None}  # one seed: no spread
    assert mc["lpips"] == {"mean": None, "std": None}  # LPIPS unavailable offline


def test_markdown_table_shows_spread_date_hardware_and_command():
    runs = [fake_run("rvs-mc:K=8", "object", 0, 25.0), fake_run("rvs-mc:K=8", "object", 1, 26.0),
            fake_run("nerfacto", "forward", 0, 24.0)]
    table = markdown_table(fake_results(runs))
    print(table)
    assert "Measured 2025-11-25 on AMD EPYC (2 cores, 2 torch threads), device cpu" in table
    assert "Command: `rvs-bench --seeds 0 1`" in table and "(mean ± std over seeds)" in table
    lines = table.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("| method")))
    assert lines[header + 1] == "|---|---|" + "---:|" * 9
    assert lines[header + 2].startswith("| rvs-mc:K=8 | object | 25.50 ± 0.71 | 0.900 ± 0.000 | – | 100 ± 1 |")
    assert "| 30,000 ± 14,142 | 96.0 ± 0.0 | 8.0 ± 0.0 |" in lines[header + 2]
    assert lines[header + 3].startswith("| nerfacto | forward | 24.00 | 0.900 | – | 100 | 5,120 | 20,000 |")


def test_cost_table_compares_step_time_and_psnr_at_equal_wall_time():
    nerfacto = fake_run("nerfacto", "object", 0, 20.0, train_seconds=100.0)
    # Slower per step: at nerfacto's 100 s it had reached only the evaluation at 90 s.
    rvs = fake_run("rvs-nerfacto", "object", 0, 23.0, train_seconds=120.0, psnr_at={0.0: 10.0, 90.0: 19.0, 110.0: 21.0, 120.0: 23.0})
    reference, slower = cost_rows(fake_results([nerfacto, rvs]))
    assert reference["ratio"] == 1.0 and reference["psnr_equal_time"] == 20.0
    assert slower["ratio"] == pytest.approx(1.2)
    assert (slower["psnr_equal_steps"], slower["psnr_equal_time"]) == (23.0, 19.0)
    assert slower["ms"] == pytest.approx({"proposal_forward": 10.0, "field_forward": 40.0, "field_backward": 60.0,
                                          "proposal_backward": 20.0, "step": 240.0})
    table = cost_table(fake_results([nerfacto, rvs]))
    print(table)
    assert "| rvs-nerfacto | object | 240 | 1.20 | 10 | 40 | 60 | 20 | 23.00 | 19.00 |" in table
    assert "(every 100 steps) within nerfacto's training time" in table


def test_results_files_are_written(tmp_path):
    results = fake_results([fake_run("nerfacto", "object", 0, 24.0), fake_run("rvs-mc:K=8", "object", 0, 25.0)])
    write_results(results, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == results
    assert (tmp_path / "out" / "results.md").read_text() == markdown_table(results) + "\n" + cost_table(results)
    assert (tmp_path / "out" / "psnr_vs_speed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_existing_results_are_not_overwritten(tmp_path):
    (tmp_path / "results.md").write_text("earlier results")
    config = BenchConfig(output=tmp_path, methods=("nerfacto",), scenes=("object",), steps=1)
    with pytest.raises(SystemExit, match=r"results\.md exists; pass --overwrite or pick another --output"):
        run_bench(config, "rvs-bench")
    assert (tmp_path / "results.md").read_text() == "earlier results"
    check_output(BenchConfig(output=tmp_path, overwrite=True))  # allowed


# --- Runner additions: counting and peak memory --------------------------------------------------------------


@pytest.mark.parametrize(
    "config_class, overrides, expected",
    [
        (OfflineNerfactoConfig, {}, {"proposal": 32 + 16, "radiance": 8}),
        (RVSNerfactoModelConfig, {}, {"proposal": 32 + 16, "radiance": 8}),
        (RVSMonteCarloModelConfig, {"num_radiance_samples": 3, "eval_num_radiance_samples": 5}, {"proposal": 32 + 16, "radiance": 5}),
    ],
)
def test_field_evaluations_per_ray_are_counted(ray_bundle, config_class, overrides, expected):
    model = build_model(config_class, **overrides).eval()
    meter = _EvalMeter(model)
    with torch.no_grad():
        model(ray_bundle)  # not counted
        with meter.measure() as cost:
            model(ray_bundle[:40])
            model(ray_bundle[40:])
    assert cost.field_evals_per_ray == expected


def test_render_throughput_times_the_image_renders_alone(ray_bundle):
    model = build_model(RVSNerfactoModelConfig).eval()
    meter = _EvalMeter(model)
    image = ray_bundle.reshape((8, 8))
    model.get_outputs_for_camera_ray_bundle(image)  # not measured
    with meter.measure() as cost:
        start = time.perf_counter()
        model.get_outputs_for_camera_ray_bundle(image)
        model.get_outputs_for_camera_ray_bundle(image)
        rendering = time.perf_counter() - start
        time.sleep(0.5)  # e.g. metrics: not rendering
    assert cost.field_evals_per_ray["radiance"] == 8
    assert 128 / rendering <= cost.render_rays_per_sec < 1.5 * 128 / rendering


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="per-run RSS peaks need Linux's clear_refs")
def test_peak_memory_is_that_of_the_enclosed_code():
    with measure_peak_memory("cpu") as big:
        block = torch.ones(64 * 2**20)  # 256 MiB, touched
        del block
    with measure_peak_memory("cpu") as small:
        pass
    assert "during the run" in big.kind
    assert big.bytes - small.bytes > 200 * 2**20


# --- Sampler micro-benchmark ---------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))])
def test_sampler_bench_smoke(device):
    config = SamplerBenchConfig(num_rays=64, num_bins=32, num_samples=12, devices=(device,), min_run_time=0.01, rounds=1)
    timings = run_sampler_bench(config)
    samplers = [t.sampler for t in timings]
    assert samplers[:4] == ["PDFSampler", "weights+PDF", "RVS resample", "RVS core"]
    assert ("nerfacc" in samplers) == (device == "cuda")
    assert {t.bins_per_ray for t in timings} == {12}  # every sampler draws the same number of bins
    assert all(t.device == device and 0 < t.forward_ms < math.inf for t in timings)
    both = {t.sampler: t.forward_backward_ms for t in timings}
    assert both["PDFSampler"] is None and all(both[name] > 0 for name in ("weights+PDF", "RVS resample", "RVS core"))
    assert forward_ratio(timings, device) > 0
    render_table(config, timings)


# --- End to end ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_rvs_bench_end_to_end_is_repeatable(tmp_path):
    """Two runs of the real command with the same seed: files, finite numbers, counted evaluations, same PSNR."""
    args = ["rvs-bench", "--methods", "nerfacto", "rvs-mc:K=4", "--scenes", "forward", "--steps", "4", "--resolution", "16"]
    results = []
    for name in ("first", "second"):
        run_cli(args + ["--output", tmp_path / name], timeout=900)
        results.append(json.loads((tmp_path / name / "results.json").read_text()))
        assert (tmp_path / name / "psnr_vs_speed.png").read_bytes()[:4] == b"\x89PNG"
    first, second = results
    assert first["meta"]["command"] == " ".join(map(str, args + ["--output", tmp_path / "first"]))
    assert first["meta"]["steps"] == 4 and first["meta"]["train_rays_per_batch"] == 512
    table = (tmp_path / "first" / "results.md").read_text()
    print(table)
    assert "| nerfacto | forward |" in table and "| rvs-mc:K=4 | forward |" in table

    nerfacto, mc = first["runs"]
    for run in first["runs"]:
        for key in ("psnr", "ssim", "train_seconds", "train_rays_per_sec", "render_rays_per_sec", "peak_memory_mib"):
            assert math.isfinite(run[key]) and run[key] > 0, (run["method"], key)
        assert run["lpips"] is None  # offline: no AlexNet weights, reported as unavailable, not NaN
    # cpu-small: proposal levels of 64 and 32 samples; nerfacto's field at 24 samples, rvs-mc's at K = 4.
    assert (nerfacto["proposal_evals_per_ray"], nerfacto["radiance_evals_per_ray"]) == (96, 24)
    assert (mc["proposal_evals_per_ray"], mc["radiance_evals_per_ray"]) == (96, 4)
    assert mc["evals"][-1]["metrics"]["radiance_evals_per_ray"] == 4  # what the model itself reports

    for run, again in zip(first["runs"], second["runs"]):
        print(f"{run['method']}: PSNR {run['psnr']:.4f} then {again['psnr']:.4f} dB")
        assert abs(run["psnr"] - again["psnr"]) < 0.01

    refused = run_cli(args + ["--output", tmp_path / "first"], check=False, timeout=300)
    assert refused.returncode != 0
    assert "results.json exists; pass --overwrite" in refused.stderr.strip().splitlines()[-1]
