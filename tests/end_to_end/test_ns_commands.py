"""Registration and the real CLIs end to end: ns-train → ns-eval → ns-render, offline, on CPU."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import urllib.request
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import BIN, OFFLINE_ENV, run_cli, train


@pytest.fixture(scope="session")
def trained_config(tiny_scene, tmp_path_factory) -> Path:
    return train("rvs-nerfacto", tiny_scene, tmp_path_factory.mktemp("runs"), 20)


def test_entry_point_key_is_method_name():
    (entry,) = [e for e in entry_points(group="nerfstudio.method_configs") if e.name == "rvs-nerfacto"]
    spec = entry.load()
    assert spec.config.method_name == entry.name
    assert spec.description


def test_plugin_imports_before_nerfstudio():
    code = (
        "import rvs_nerfstudio.method_configs\n"
        "from nerfstudio.configs.method_configs import all_methods, all_descriptions\n"
        "assert 'rvs-nerfacto' in all_methods and 'nerfacto' in all_methods\n"
        "print(all_descriptions['rvs-nerfacto'])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "reparameterized volume sampling" in result.stdout


def test_ns_train_help_lists_method():
    help_text = run_cli(["ns-train", "--help"], timeout=120).stdout
    assert "rvs-nerfacto" in help_text and "reparameterized volume sampling" in help_text.replace("\n", " ")


@pytest.mark.parametrize("gpu_visible, device", [(False, "cpu"), (True, "cuda")])
def test_methods_default_to_the_device_that_exists(gpu_visible, device):
    """In a fresh process whose torch sees a GPU or none, both registered methods default to that device."""
    code = (
        f"import torch; torch.cuda.is_available = lambda: {gpu_visible}\n"
        "from rvs_nerfstudio.method_configs import rvs_mc, rvs_nerfacto\n"
        "print(rvs_nerfacto.config.machine.device_type, rvs_mc.config.machine.device_type)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.split()[-2:] == [device, device]


def test_method_defaults_follow_nerfacto():
    from rvs_nerfstudio.method_configs import rvs_nerfacto

    config = rvs_nerfacto.config
    assert config.pipeline.model.average_init_density == 0.01
    assert config.pipeline.model.camera_optimizer.mode == "SO3xR3"
    assert config.vis == "viewer+tensorboard"


def learning_rates(optimizer_config: dict, steps) -> np.ndarray:
    """The learning rate a method's optimizer group config gives at each of ``steps``."""
    optimizer = optimizer_config["optimizer"].setup([torch.nn.Parameter(torch.zeros(1))])
    scheduler = optimizer_config["scheduler"].setup().get_scheduler(optimizer, lr_init=optimizer_config["optimizer"].lr)
    return np.array([scheduler.lr_lambdas[0](step) * optimizer_config["optimizer"].lr for step in steps])


def test_rvs_nerfacto_slows_its_proposals_to_a_tenth_over_the_warmup_and_keeps_nerfactos_other_rates():
    """rvs-nerfacto's proposal rate falls geometrically from 1e-2 to 1e-3 over 5000 steps and then holds; its field and
    camera rates, and all of rvs-mc's, are nerfacto's own (read from nerfstudio's registered nerfacto)."""
    from nerfstudio.configs.method_configs import method_configs
    from rvs_nerfstudio.method_configs import rvs_mc, rvs_nerfacto

    steps = [0, 1000, 2500, 5000, 10000, 30000]
    expected = 1e-2 * 0.1 ** (np.minimum(steps, 5000) / 5000)
    proposal_rates = learning_rates(rvs_nerfacto.config.optimizers["proposal_networks"], steps)
    np.testing.assert_allclose(proposal_rates, expected, rtol=1e-9)
    nerfacto = method_configs["nerfacto"].optimizers
    for group in ("fields", "camera_opt"):
        np.testing.assert_allclose(learning_rates(rvs_nerfacto.config.optimizers[group], steps), learning_rates(nerfacto[group], steps))
    for group in ("proposal_networks", "fields", "camera_opt"):
        np.testing.assert_allclose(learning_rates(rvs_mc.config.optimizers[group], steps), learning_rates(nerfacto[group], steps))


@pytest.mark.slow
def test_checkpoint_loads_with_weights_only(trained_config):
    (checkpoint,) = (trained_config.parent / "nerfstudio_models").glob("*.ckpt")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert state["step"] == 19
    learning_rates = [g["lr"] for o in state["optimizers"].values() for g in o["param_groups"]]
    assert learning_rates and all(type(lr) is float for lr in learning_rates)


@pytest.mark.parametrize(
    "tool, counts",  # the counts per level the message names: nerfacto's full sizes, and the bench's cpu-small preset
    [("ns-train", "(256, 96, 200)"), ("rvs-bench", "(64, 32, 200)")],
)
def test_impossible_model_options_end_the_command_in_one_line(tool, counts, small_scene, tmp_path):
    command = {
        "ns-train": ["ns-train", "rvs-nerfacto", "--pipeline.model.num-nerf-samples-per-ray", "200", "--data", small_scene,
                     "--output-dir", tmp_path, "--vis", "tensorboard", "--max-num-iterations", "2"],
        "rvs-bench": ["rvs-bench", "quality", "--methods", "rvs-nerfacto:num_nerf_samples_per_ray=200", "--resolution", "8",
                      "--steps", "2", "--output", tmp_path],
    }[tool]
    result = run_cli(command, check=False, timeout=300)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last_line = result.stderr.strip().splitlines()[-1]
    assert "must not grow from one level to the next" in last_line and counts in last_line, last_line


@pytest.mark.slow
def test_ns_eval_writes_finite_metrics_without_fake_lpips(trained_config, tmp_path):
    output = tmp_path / "metrics.json"
    result = run_cli(["ns-eval", "--load-config", trained_config, "--output-path", output])
    metrics = json.loads(output.read_text())["results"]
    print("ns-eval:", metrics)
    assert math.isfinite(metrics["psnr"]) and 5 < metrics["psnr"] < 60
    assert math.isfinite(metrics["ssim"]) and 0 < metrics["ssim"] <= 1
    assert "lpips" not in metrics, "offline, LPIPS must be reported as unavailable, not as a number"
    assert (result.stdout + result.stderr).count("LPIPS is unavailable") == 1


@pytest.mark.slow
def test_ns_render_dataset_writes_images(trained_config, tmp_path):
    run_cli(
        ["ns-render", "dataset", "--load-config", trained_config, "--output-path", tmp_path / "renders"]
        + ["--split", "test", "--rendered-output-names", "rgb", "depth"]
    )
    images = sorted((tmp_path / "renders").rglob("*.png")) + sorted((tmp_path / "renders").rglob("*.jpg"))
    assert len(images) == 6, images


@pytest.mark.slow
def test_demo_runs_on_default_scene_layout(tmp_path):
    result = run_cli(["rvs-demo", "--data", tmp_path / "scene", "--output-dir", tmp_path / "out", "--steps", "5"])
    assert (tmp_path / "scene" / "transforms.json").exists()
    assert "psnr" in result.stdout


@pytest.mark.slow
def test_ns_viewer_serves_the_finished_run(trained_config):
    port = 7217
    viewer = subprocess.Popen(
        [str(BIN / "ns-viewer"), "--load-config", str(trained_config), "--viewer.websocket-port", str(port)],
        env=OFFLINE_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and viewer.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    assert response.status == 200 and b"<html" in response.read().lower()
                    return
            except OSError:
                time.sleep(1)
        output = viewer.stdout.read() if viewer.poll() is not None else "(still running)"
        raise AssertionError(f"ns-viewer served nothing on port {port}: {output[-3000:]}")
    finally:
        viewer.terminate()
        viewer.wait(timeout=30)
