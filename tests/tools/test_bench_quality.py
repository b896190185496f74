"""``rvs-bench quality``: summaries over seeds, tables, output files, repeatability end to end."""

from __future__ import annotations

import json
import re
import math

import pytest

from rvs_nerfstudio.tools.bench.quality import (
    MergeConfig,
    QualityConfig,
    cost_rows,
    cost_table,
    late_drop,
    markdown_table,
    paired_rows,
    paired_table,
    run_merge,
    run_quality,
    summarize,
    write_results,
)
from tests.helpers import run_cli

# --- Tables and files ----------------------------------------------------------------------------------------


def fake_run(method: str, scene: str, seed: int, psnr: float, train_seconds: float = 100.0, psnr_at=None) -> dict:
    """A run of 500 steps; ``psnr_at`` maps training seconds to the held-out PSNR evaluated then."""
    train_seconds += seed
    psnr_at = psnr_at or {0.0: 10.0, train_seconds: psnr}
    return {
        "method": method, "scene": scene, "seed": seed, "psnr": psnr, "ssim": 0.9, "lpips": None,
        "train_seconds": train_seconds, "train_rays_per_sec": 5120.0, "render_rays_per_sec": 20000.0 * (1 + seed),
        "proposal_evals_per_ray": 96.0, "radiance_evals_per_ray": 8.0, "peak_memory_mib": 1500.0,
        "seconds_per_step": train_seconds / 500, "edges_inside": 0.6 - 0.1 * seed, "edges_in_front": 0.3,
        "phase_seconds": {"proposal_forward": 5.0, "field_forward": 20.0, "field_backward": 30.0,
                          "proposal_backward": 10.0, "step": train_seconds},
        "evals": [{"step": i, "train_seconds": t, "metrics": {"psnr": p}} for i, (t, p) in enumerate(psnr_at.items())],
    }


def fake_results(runs) -> dict:
    meta = {
        "date": "2025-11-25T12:00:00+00:00", "command": "rvs-bench quality --seeds 0 1", "preset": "cpu-small", "steps": 500,
        "eval_every": 100, "layout": "nerfstudio", "methods": list(dict.fromkeys(run["method"] for run in runs)),
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
    assert "Command: `rvs-bench quality --seeds 0 1`" in table and "(mean ± std over seeds)" in table
    lines = table.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("| method")))
    assert lines[header + 1] == "|---|---|" + "---:|" * 11
    assert lines[header + 2].startswith("| rvs-mc:K=8 | object | 25.50 ± 0.71 | 0.900 ± 0.000 | – | 100 ± 1 |")
    assert "| 30,000 ± 14,142 | 96.0 ± 0.0 | 8.0 ± 0.0 |" in lines[header + 2]
    assert lines[header + 2].endswith("| 0.55 ± 0.07 | 0.30 ± 0.00 |")
    assert lines[header + 3].startswith("| nerfacto | forward | 24.00 | 0.900 | – | 100 | 5,120 | 20,000 |")


def test_cost_table_compares_step_time_and_psnr_at_equal_wall_time():
    nerfacto = fake_run("nerfacto", "object", 0, 20.0, train_seconds=100.0)
    # Slower per step: at nerfacto's 100 s it had reached only the evaluation at 90 s.
    rvs = fake_run("rvs-nerfacto", "object", 0, 23.0, train_seconds=120.0, psnr_at={0.0: 10.0, 90.0: 19.0, 110.0: 21.0, 120.0: 23.0})
    reference, slower = cost_rows(fake_results([nerfacto, rvs]))
    assert reference["psnr_equal_time"] == 20.0  # its own last evaluation lies within its own training time
    assert slower["ratio"] == pytest.approx(1.2)
    assert (slower["psnr_equal_steps"], slower["psnr_equal_time"]) == (23.0, 19.0)
    assert slower["ms"] == pytest.approx({"proposal_forward": 10.0, "field_forward": 40.0, "field_backward": 60.0,
                                          "proposal_backward": 20.0, "step": 240.0})
    table = cost_table(fake_results([nerfacto, rvs]))
    print(table)
    assert "| rvs-nerfacto | object | 240 | 1.20 | 10 | 40 | 60 | 20 | 23.00 | 19.00 |" in table
    assert "(every 100 steps) within nerfacto's training time" in table


def test_step_time_ratio_is_the_mean_of_per_seed_ratios():
    """Each seed is compared with nerfacto's run of the same seed (fake_run adds the seed to the training time)."""
    runs = [fake_run("nerfacto", "object", 0, 20.0, train_seconds=100.0), fake_run("nerfacto", "object", 1, 20.0, train_seconds=199.0),
            fake_run("rvs-nerfacto", "object", 0, 23.0, train_seconds=150.0), fake_run("rvs-nerfacto", "object", 1, 23.0, train_seconds=99.0)]
    _, rvs = cost_rows(fake_results(runs))
    assert rvs["ratio"] == pytest.approx((150 / 100 + 100 / 200) / 2)  # 1.0; the ratio of the mean times would be 0.83


def with_evals(run: dict, psnr_by_step: dict) -> dict:
    """``run`` evaluated at the given steps (training seconds = step / 5), its final PSNR the last one's."""
    run["evals"] = [{"step": step, "train_seconds": step / 5, "metrics": {"psnr": psnr}} for step, psnr in psnr_by_step.items()]
    run["psnr"], run["train_seconds"] = run["evals"][-1]["metrics"]["psnr"], run["evals"][-1]["train_seconds"]
    return run


def test_late_drop_is_the_largest_fall_below_the_best_so_far_in_the_second_half():
    run = with_evals(fake_run("rvs-nerfacto", "object", 0, 0.0), {0: 10.0, 100: 17.5, 200: 14.0, 250: 16.0, 400: 15.0, 500: 16.5})
    assert late_drop(run, 500) == pytest.approx(2.5)  # at step 400 (2.5 below 17.5); step 200's 3.5 is in the first half
    assert late_drop(run, 1000) == pytest.approx(1.0)  # of 1000 steps only step 500 (16.5) is in the second half
    assert late_drop(run, 1200) == 0.0  # no evaluation in the second half
    rising = with_evals(fake_run("nerfacto", "object", 0, 0.0), {0: 10.0, 250: 12.0, 500: 13.0})
    assert late_drop(rising, 500) == 0.0


def test_paired_table_has_per_seed_differences_at_equal_steps_and_time():
    runs = [
        with_evals(fake_run("nerfacto", "object", 0, 0.0), {0: 10.0, 250: 14.0, 500: 15.0}),  # 100 s
        with_evals(fake_run("nerfacto", "object", 1, 0.0), {0: 10.0, 250: 15.0, 500: 16.0}),
        # Slower: at nerfacto's 100 s only step 250 (50 s) is within; step 550 ends at 110 s.
        with_evals(fake_run("rvs-nerfacto", "object", 0, 0.0), {0: 10.0, 250: 16.0, 550: 16.5}),
        with_evals(fake_run("rvs-nerfacto", "object", 1, 0.0), {0: 10.0, 250: 17.0, 500: 15.5}),
    ]
    results = fake_results(runs)
    nerfacto, rvs = paired_rows(results)
    assert (nerfacto["equal_steps"], nerfacto["equal_time"], nerfacto["late_drop"]) == (None, None, [0.0, 0.0])
    assert rvs["equal_steps"] == pytest.approx([1.5, -0.5])
    assert rvs["equal_time"] == pytest.approx([1.0, -0.5])  # seed 0 at step 250: 16.0 - 15.0
    assert rvs["late_drop"] == pytest.approx([0.0, 1.5])
    table = paired_table(results)
    print(table)
    assert "| nerfacto | object | 0 1 | – | – | – | – | 0.00 / 0.00 | 0.00 |" in table
    assert "| rvs-nerfacto | object | 0 1 | +1.50 / -0.50 | +0.50 ± 1.41 | +1.00 / -0.50 | +0.25 ± 1.06 | 0.00 / 1.50 | 1.50 |" in table


def test_results_files_are_written(tmp_path):
    results = fake_results([fake_run("nerfacto", "object", 0, 24.0), fake_run("rvs-mc:K=8", "object", 0, 25.0)])
    write_results(results, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "quality.json").read_text()) == results
    assert (tmp_path / "out" / "quality.md").read_text() == "\n".join(
        (markdown_table(results), cost_table(results), paired_table(results))
    )
    assert (tmp_path / "out" / "psnr_vs_speed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_existing_results_are_not_overwritten(tmp_path):
    (tmp_path / "psnr_vs_speed.png").write_text("earlier plot")
    config = QualityConfig(output=tmp_path, methods=("nerfacto",), scenes=("object",), steps=1)
    with pytest.raises(SystemExit, match=r"psnr_vs_speed\.png exists; pass --overwrite or pick another --output"):
        run_quality(config, "rvs-bench quality")
    assert (tmp_path / "psnr_vs_speed.png").read_text() == "earlier plot"


# --- End to end ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_rvs_bench_end_to_end_is_repeatable(tmp_path):
    """Two runs of the real command with the same seed: files, finite numbers, counted evaluations, same PSNR."""
    args = ["rvs-bench", "quality", "--methods", "nerfacto", "rvs-mc:K=4", "--scenes", "forward", "--steps", "4", "--resolution", "16"]
    results = []
    for name in ("first", "second"):
        shown = run_cli(args + ["--output", tmp_path / name], timeout=900).stdout
        assert "  step 0: PSNR" in shown and "  step 4: PSNR" in shown  # each evaluation as it is made
        results.append(json.loads((tmp_path / name / "quality.json").read_text()))
        assert (tmp_path / name / "psnr_vs_speed.png").read_bytes()[:4] == b"\x89PNG"
    first, second = results
    assert first["meta"]["command"] == " ".join(map(str, args + ["--output", tmp_path / "first"]))
    assert first["meta"]["steps"] == 4 and first["meta"]["train_rays_per_batch"] == 512
    table = (tmp_path / "first" / "quality.md").read_text()
    print(table)
    assert "| nerfacto | forward |" in table and "| rvs-mc:K=4 | forward |" in table
    assert "Late drop:" in table and "| rvs-mc:K=4 | forward | 0 |" in table  # the paired table

    nerfacto, mc = first["runs"]
    for run in first["runs"]:
        for key in ("psnr", "ssim", "train_seconds", "train_rays_per_sec", "render_rays_per_sec", "peak_memory_mib"):
            assert math.isfinite(run[key]) and run[key] > 0, (run["method"], key)
        assert run["lpips"] is None  # offline: no AlexNet weights, reported as unavailable, not NaN
        assert 0 <= run["edges_inside"] <= 1 - run["edges_in_front"] and 0 < run["interval_width"] <= 1
    # cpu-small: proposal levels of 64 and 32 samples (rvs-mc's density levels: 32 and 32); nerfacto's field at 24
    # samples, rvs-mc's at K = 4.
    assert (nerfacto["proposal_evals_per_ray"], nerfacto["radiance_evals_per_ray"]) == (96, 24)
    assert (mc["proposal_evals_per_ray"], mc["radiance_evals_per_ray"]) == (64, 4)
    assert mc["evals"][-1]["metrics"]["radiance_evals_per_ray"] == 4  # what the model itself reports

    for run, again in zip(first["runs"], second["runs"]):
        print(f"{run['method']}: PSNR {run['psnr']:.4f} then {again['psnr']:.4f} dB")
        assert abs(run["psnr"] - again["psnr"]) < 0.01

    refused = run_cli(args + ["--output", tmp_path / "first"], check=False, timeout=300)
    assert refused.returncode != 0
    assert "quality.json exists; pass --overwrite" in refused.stderr.strip().splitlines()[-1]


def test_merge_keeps_every_run_and_pairs_them_with_the_first_record_first_method(tmp_path):
    """Two records made in separate processes: one report with both methods, the paired table against the first."""
    first = fake_results([fake_run("nerfacto", "object", 0, 20.0), fake_run("nerfacto", "object", 1, 21.0)])
    second = fake_results([fake_run("rvs-nerfacto", "object", 0, 22.5), fake_run("rvs-nerfacto", "object", 1, 21.5)])
    second["meta"]["command"] = "rvs-bench quality --methods rvs-nerfacto"
    for name, record in (("a", first), ("b", second)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "quality.json").write_text(json.dumps(record))
    merged = run_merge(MergeConfig(inputs=(tmp_path / "a", tmp_path / "b" / "quality.json"), output=tmp_path / "m"), "merge")
    assert merged["meta"]["methods"] == ["nerfacto", "rvs-nerfacto"] and merged["meta"]["seeds"] == [0, 1]
    assert merged["meta"]["command"] == "rvs-bench quality --seeds 0 1 ; rvs-bench quality --methods rvs-nerfacto ; merge"
    assert len(merged["runs"]) == 4
    rvs = next(row for row in paired_rows(merged) if row["method"] == "rvs-nerfacto")
    assert rvs["equal_steps"] == pytest.approx([2.5, 0.5])
    assert "| rvs-nerfacto | object |" in (tmp_path / "m" / "quality.md").read_text()

    second["meta"]["resolution"] = 32
    (tmp_path / "b" / "quality.json").write_text(json.dumps(second))
    with pytest.raises(SystemExit, match="cannot merge runs with different resolution"):
        run_merge(MergeConfig(inputs=(tmp_path / "a", tmp_path / "b"), output=tmp_path / "n"), "merge")
    with pytest.raises(SystemExit, match="not found: .*missing"):
        run_merge(MergeConfig(inputs=(tmp_path / "a", tmp_path / "missing"), output=tmp_path / "n"), "merge")


def test_merge_reports_runs_at_seeds_the_first_method_lacks_without_pairing_them(tmp_path):
    """A record with an extra seed of the second method: its own PSNR and late drop are reported, its paired
    difference and step-time ratio are "–" (no first-method run there), and the paired seed keeps its difference."""
    first = fake_results([fake_run("nerfacto", "object", 0, 20.0)])
    second = fake_results([fake_run("rvs-nerfacto", "object", 0, 22.5), fake_run("rvs-nerfacto", "object", 3, 19.0)])
    for name, record in (("a", first), ("b", second)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "quality.json").write_text(json.dumps(record))
    merged = run_merge(MergeConfig(inputs=(tmp_path / "a", tmp_path / "b"), output=tmp_path / "m"), "merge")
    rvs = next(row for row in paired_rows(merged) if row["method"] == "rvs-nerfacto")
    assert rvs["seeds"] == [0, 3] and rvs["equal_steps"][0] == pytest.approx(2.5) and rvs["equal_steps"][1] is None
    assert len(rvs["late_drop"]) == 2
    report = (tmp_path / "m" / "quality.md").read_text()
    assert "| rvs-nerfacto | object | 0 3 | +2.50 / – | +2.50 |" in report
    cost = report.split("Training cost per step")[1].split("\n\n")[1]
    assert re.search(r"^\| rvs-nerfacto \| object \| \d+ \| – \|", cost, re.MULTILINE), cost
