"""Degenerate scenes train without NaN: all-black and all-white images, a single view, 1×1-pixel images."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict

import numpy as np
import pytest
import torch
from PIL import Image

from rvs_nerfstudio.data.synth import SynthConfig, generate_scene
from rvs_nerfstudio.method_configs import rvs_mc, rvs_nerfacto
from rvs_nerfstudio.tools.runner import setup_trainer, stop_data_workers

pytestmark = pytest.mark.slow


def paint(value: int) -> Callable[[Path], None]:
    """Overwrites every image of a scene with one grey level (0: black, 255: white)."""

    def repaint(scene: Path) -> None:
        for image in (scene / "images").iterdir():
            size = Image.open(image).size
            Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(image)

    return repaint


SCENES: Dict[str, tuple] = {
    "all black": (dict(resolution=16, num_train=6, num_test=2), paint(0)),
    "all white": (dict(resolution=16, num_train=6, num_test=2), paint(255)),
    "single view": (dict(resolution=16, num_train=1, num_test=1), None),
    "1x1 images": (dict(resolution=1, num_train=6, num_test=2), None),
}


@pytest.mark.parametrize("method", [rvs_nerfacto, rvs_mc], ids=["rvs-nerfacto", "rvs-mc"])
@pytest.mark.parametrize("case", SCENES)
def test_degenerate_scene_trains_without_nan(case, method, tmp_path):
    options, repaint = SCENES[case]
    scene = generate_scene(SynthConfig(output=tmp_path / "scene", **options))
    if repaint is not None:
        repaint(scene)
    trainer = setup_trainer(method.config, scene, "cpu-small", tmp_path / "runs", seed=0)
    trainer.config.max_num_iterations = 15
    try:
        trainer.train()  # a non-finite loss would stop it with TrainingStopped
        model = trainer.pipeline.model
        assert all(parameter.isfinite().all() for parameter in model.parameters())
        camera, _ = trainer.pipeline.datamanager.next_eval_image(0)
        model.eval()
        with torch.no_grad():
            outputs = model.get_outputs_for_camera(camera)
    finally:
        stop_data_workers(trainer)
    for name in ("rgb", "depth", "accumulation"):
        assert outputs[name].isfinite().all(), f"{case}: {name} is not finite"
