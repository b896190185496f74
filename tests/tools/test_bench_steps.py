"""``rvs-bench steps``: methods take turns, ratios are per turn against the first method."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
import torch

from rvs_nerfstudio.tools.bench.steps import StepsConfig, ratio_rows, run_steps, time_in_turns
from tests.helpers import run_cli


class FakeTrainer:
    """Records which trainer ran which step, in one log shared by all; each step takes ``seconds``."""

    def __init__(self, name: str, log: list, seconds: float = 0.0) -> None:
        self.name, self.log, self.callbacks, self.seconds = name, log, [], seconds
        self.pipeline = SimpleNamespace(train=lambda: None)

    def train_iteration(self, step: int):
        """Nerfstudio's return value: loss, loss dict, metrics dict."""
        self.log.append((self.name, step))
        time.sleep(self.seconds)
        return torch.zeros(()), {}, {}


def test_methods_take_turns_after_their_warmup():
    log: list = []
    trainers = {name: FakeTrainer(name, log) for name in ("a", "b")}
    seconds = time_in_turns(trainers, warmup=2, turns=3, steps_per_turn=2)
    expected = [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    for turn in range(3):
        steps = [2 + 2 * turn, 3 + 2 * turn]
        expected += [("a", step) for step in steps] + [("b", step) for step in steps]
    assert log == expected
    assert {name: len(times) for name, times in seconds.items()} == {"a": 3, "b": 3}


def test_steps_are_numbered_from_the_first_step():
    log: list = []
    time_in_turns({"a": FakeTrainer("a", log)}, warmup=1, turns=2, steps_per_turn=2, first_step=5000)
    assert log == [("a", 5000), ("a", 5001), ("a", 5002), ("a", 5003), ("a", 5004)]


@pytest.mark.parametrize("option", ["first_step", "warmup"])
def test_negative_step_counts_are_refused_in_one_line(option, tmp_path):
    with pytest.raises(SystemExit, match=f"^rvs-bench: --{option.replace('_', '-')} must be at least 0 \\(got -1\\)$"):
        run_steps(StepsConfig(output=tmp_path, **{option: -1}), "rvs-bench steps")


def test_turns_time_seconds_per_step():
    trainers = {"fast": FakeTrainer("fast", [], seconds=0.01), "slow": FakeTrainer("slow", [], seconds=0.03)}
    seconds = time_in_turns(trainers, warmup=1, turns=2, steps_per_turn=3)
    assert all(0.01 <= t < 0.025 for t in seconds["fast"]) and all(0.03 <= t < 0.045 for t in seconds["slow"]), seconds


def test_ratios_are_medians_of_per_turn_ratios():
    seconds = {"nerfacto": [0.1, 0.2, 0.4], "rvs": [0.12, 0.3, 0.44]}
    first, rvs = ratio_rows(seconds)
    assert first["ms_per_step"] == pytest.approx(200.0)
    assert rvs["ratio"] == pytest.approx(1.2)  # per turn 1.2, 1.5, 1.1; the median ratio of the times would be 1.5
    assert rvs["ratio_range"] == pytest.approx((1.1, 1.5))
    assert rvs["ms_per_step"] == pytest.approx(300.0)


@pytest.mark.slow
def test_rvs_step_bench_end_to_end(tmp_path):
    args = ["rvs-bench", "steps", "--methods", "nerfacto", "rvs-nerfacto", "--resolution", "16", "--first-step", "5000",
            "--warmup", "1", "--turns", "2", "--steps-per-turn", "1", "--output", str(tmp_path)]
    output = run_cli(args, timeout=900).stdout
    print(output)
    assert f"Command: `{' '.join(args)}`" in output and "1 untimed steps per method from step 5000" in output
    assert "| nerfacto |" in output and "| 1.00 | 1.00–1.00 |" in output and "| rvs-nerfacto |" in output
    record = json.loads((tmp_path / "steps.json").read_text())
    assert (tmp_path / "steps.md").read_text() in output
    assert [row["method"] for row in record["rows"]] == ["nerfacto", "rvs-nerfacto"]
    assert {label: len(times) for label, times in record["seconds_per_step"].items()} == {"nerfacto": 2, "rvs-nerfacto": 2}
    refused = run_cli(args, check=False, timeout=300)
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1].endswith("steps.json exists; pass --overwrite or pick another --output")
