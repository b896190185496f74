"""``ns-export pointcloud`` and ``ns-render`` (dataset and interpolate) with both rvs methods, through the real CLIs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import run_cli, train


@pytest.fixture(scope="module", params=["rvs-nerfacto", "rvs-mc"])
def trained_config(request, small_scene, tmp_path_factory) -> Path:
    method = request.param
    extra = ["--pipeline.model.num-radiance-samples", "4"] if method == "rvs-mc" else []
    return train(method, small_scene, tmp_path_factory.mktemp("runs"), 10, *extra)


def read_ply_vertices(path: Path) -> np.ndarray:
    """The points ``[N, 3]`` of a PLY file, read with open3d (a nerfstudio dependency, as ns-export writes it)."""
    import open3d as o3d

    return np.asarray(o3d.io.read_point_cloud(str(path)).points)


@pytest.mark.slow
def test_ns_export_pointcloud_writes_points(trained_config, tmp_path):
    export = ["ns-export", "pointcloud", "--load-config", trained_config, "--output-dir", tmp_path]
    export += ["--num-points", "500", "--num-rays-per-batch", "512", "--remove-outliers", "False"]
    # The default normal method reads the model's normals, which the rvs methods do not predict: a clear refusal.
    refused = run_cli(export, timeout=300, check=False)
    assert "Normal output 'normals' not found" in refused.stdout + refused.stderr
    assert not (tmp_path / "point_cloud.ply").exists()
    run_cli(export + ["--normal-method", "open3d"], timeout=300)
    points = read_ply_vertices(tmp_path / "point_cloud.ply")
    print(f"{trained_config.parent.parent.name}: {len(points)} points")
    assert len(points) >= 100 and np.isfinite(points).all()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ns-render interpolate needs ffmpeg: apt-get install ffmpeg (make test does this on Debian)")
def test_ns_render_interpolate_writes_frames(trained_config, tmp_path):
    run_cli(
        ["ns-render", "interpolate", "--load-config", trained_config, "--output-path", tmp_path / "frames"]
        + ["--output-format", "images", "--pose-source", "eval", "--interpolation-steps", "2"]
        + ["--rendered-output-names", "rgb", "depth"],
        timeout=300,
    )
    frames = sorted((tmp_path / "frames").rglob("*.jpg")) + sorted((tmp_path / "frames").rglob("*.png"))
    assert len(frames) >= 2, frames
