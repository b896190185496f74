"""``rvs-bench render``: per-turn speed ratios, the K dial's radiance calls per ray, tables and files."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from rvs_nerfstudio.models.rvs_mc import RVSMonteCarloModelConfig
from rvs_nerfstudio.tools.bench.common import parse_methods
from rvs_nerfstudio.tools.bench.render import PHASES, entries, summarize
from tests.helpers import OfflineNerfactoConfig, build_model, run_cli


def fake_render(rays_per_sec: float, psnr: float = 20.0, radiance: float = 8.0) -> dict:
    share = 1e6 / rays_per_sec / len(PHASES)
    return {
        "metrics": {"psnr": psnr}, "render_rays_per_sec": rays_per_sec,
        "field_evals_per_ray": {"proposal": 352.0, "radiance": radiance},
        "render_us_per_ray": dict.fromkeys(PHASES, share),
    }


def test_speed_ratios_are_per_turn_medians_against_the_first_entry():
    renders = {
        "rvs-nerfacto": [fake_render(100), fake_render(200), fake_render(400)],
        "rvs-mc:K=8@K=8": [fake_render(250), fake_render(300), fake_render(1000, psnr=21.0)],
    }
    first, dial = summarize(renders)
    assert (first["speed_ratio"], first["speed_ratio_range"]) == (1.0, (1.0, 1.0))
    # per turn 2.5, 1.5, 2.5: the ratio of the median speeds (300 / 200) would be 1.5
    assert dial["speed_ratio"] == pytest.approx(2.5) and dial["speed_ratio_range"] == pytest.approx((1.5, 2.5))
    assert dial["rays_per_sec"] == 300 and dial["psnr"] == 21.0
    assert dial["us_per_ray"]["density"] == pytest.approx(1e6 / 300 / 4)


def test_every_dial_entry_has_its_own_label_and_k():
    """Two rvs-mc variants on one dial must not share table rows; methods without a dial render as configured."""
    specs = parse_methods(["rvs-mc:K=8", "rvs-mc:K=8,density_padding=1", "nerfacto"])
    models = [build_model(RVSMonteCarloModelConfig), build_model(RVSMonteCarloModelConfig), build_model(OfflineNerfactoConfig)]
    trainers = {spec.label: SimpleNamespace(pipeline=SimpleNamespace(model=model)) for spec, model in zip(specs, models)}
    table = entries(specs, trainers, (1, 4))
    assert [(entry.label, entry.k) for entry in table] == [
        ("rvs-mc:K=8@K=1", 1), ("rvs-mc:K=8@K=4", 4), ("rvs-mc:K=8,density_padding=1@K=1", 1),
        ("rvs-mc:K=8,density_padding=1@K=4", 4), ("nerfacto", None)]
    assert [entry.trainer.pipeline.model for entry in table] == [models[0]] * 2 + [models[1]] * 2 + [models[2]]


@pytest.mark.slow
def test_render_bench_dials_k_after_training(tmp_path):
    args = ["rvs-bench", "render", "--methods", "rvs-mc:K=8", "nerfacto", "--k", "1", "4", "--preset", "cpu-small",
            "--resolution", "8", "--turns", "2", "--train-steps", "3", "--output", str(tmp_path)]
    output = run_cli(args, timeout=900).stdout
    print(output)
    record = json.loads((tmp_path / "render.json").read_text())
    rows = {row["label"]: row for row in record["rows"]}
    assert list(rows) == ["rvs-mc:K=8@K=1", "rvs-mc:K=8@K=4", "nerfacto"]
    # Counted at the radiance field during the renders: the dial's K, and nerfacto's cpu-small sample count.
    assert {label: row["field_evals_per_ray"]["radiance"] for label, row in rows.items()} == {
        "rvs-mc:K=8@K=1": 1.0, "rvs-mc:K=8@K=4": 4.0, "nerfacto": 24.0}
    # cpu-small's proposal levels: 64 + 32 points for nerfacto, 32 + 32 for rvs-mc's density levels.
    assert {label: row["field_evals_per_ray"]["proposal"] for label, row in rows.items()} == {
        "rvs-mc:K=8@K=1": 64.0, "rvs-mc:K=8@K=4": 64.0, "nerfacto": 96.0}
    assert all(len(turns) == 2 for turns in record["renders"].values())
    assert (tmp_path / "render.md").read_text() in output and (tmp_path / "render_dial.png").stat().st_size > 0
    assert f"Command: `{' '.join(args)}`" in output
    refused = run_cli(args, check=False, timeout=300)
    assert refused.returncode != 0 and refused.stderr.strip().splitlines()[-1].endswith(
        "render.json exists; pass --overwrite or pick another --output")
    no_dial = run_cli(["rvs-bench", "render", "--methods", "nerfacto", "--k", "2", "--preset", "cpu-small",
                       "--resolution", "8", "--output", str(tmp_path / "no-dial")], check=False, timeout=300)
    assert no_dial.stderr.strip().splitlines()[-1] == "rvs-bench: --k needs an rvs-mc method among --methods"
