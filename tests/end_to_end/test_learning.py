"""Both methods learn on every scene class: short CPU runs raise held-out PSNR well above the untrained value, and
above bounds that earlier code failed (rvs-nerfacto on an unscaled Blender scene, rvs-mc on objects on white and on
the unbounded scene)."""

from __future__ import annotations

import copy

import pytest

from rvs_nerfstudio.data.synth import SynthConfig, generate_scene
from rvs_nerfstudio.method_configs import rvs_mc, rvs_nerfacto
from rvs_nerfstudio.tools.runner import train


@pytest.mark.slow
def test_short_training_raises_held_out_psnr(tmp_path):
    scene = generate_scene(SynthConfig(output=tmp_path / "object", resolution=32, num_train=24, num_test=4))
    result = train(rvs_nerfacto.config, scene, steps=300, preset="cpu-small", seed=0)
    untrained, trained = result.evals[0].metrics["psnr"], result.evals[-1].metrics["psnr"]
    print(f"held-out PSNR: untrained {untrained:.2f} dB, after 300 steps {trained:.2f} dB")
    assert trained > untrained + 4.0


@pytest.mark.slow
def test_rvs_nerfacto_learns_the_unbounded_scene(tmp_path):
    scene = generate_scene(SynthConfig(output=tmp_path / "unbounded", scene="unbounded", resolution=32, num_train=24, num_test=4))
    result = train(rvs_nerfacto.config, scene, steps=300, preset="cpu-small", seed=0)
    untrained, trained = result.evals[0].metrics["psnr"], result.evals[-1].metrics["psnr"]
    print(f"unbounded scene, held-out PSNR: untrained {untrained:.2f} dB, after 300 steps {trained:.2f} dB")
    assert trained > untrained + 4.0


def blender_object(tmp_path):
    """A 360° object in Blender layout: RGBA, cameras 4 units away, composited on white by the parser."""
    return generate_scene(
        SynthConfig(output=tmp_path / "lego", scene="object", layout="blender", resolution=32, num_train=24, num_test=4)
    )


@pytest.mark.slow
def test_rvs_nerfacto_learns_a_blender_object_because_its_cameras_are_fitted(tmp_path):
    """With nerfstudio's Blender parser the object stays 4 units away, where rvs-nerfacto learned much less."""
    scene, config = blender_object(tmp_path), copy.deepcopy(rvs_nerfacto.config)
    fitted = train(config, scene, steps=300, preset="cpu-small", seed=0).evals[-1].metrics["psnr"]
    config.pipeline.datamanager.dataparser.blender_fit_cameras = False
    unfitted = train(config, scene, steps=300, preset="cpu-small", seed=0).evals[-1].metrics["psnr"]
    print(f"rvs-nerfacto on a Blender object after 300 steps: {fitted:.2f} dB fitted, {unfitted:.2f} dB as in the files")
    # Fitted 15.69 / 14.28 / 13.98 dB on three machines (float rounding differs across CPUs, and the run finds the
    # object at a different step); as in the files 10.97 / 11.29 / 11.12, about the white image alone. Both bounds
    # fail without the fit.
    assert fitted > 12.5 and fitted > unfitted + 1.5


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["blender", "nerfstudio"])
def test_rvs_mc_learns_an_object_on_white_at_the_defaults(tmp_path, layout):
    """`--data` alone: the white the images were composited on (Blender: by the parser; RGB: their plain borders) is
    rvs-mc's background and its rays end at the scene box. With far space open, fog of the background colour filled
    it and training stalled near the background-only image (10.5-12.6 dB in 4 of 6 seeds); with "random" as well."""
    scene = generate_scene(
        SynthConfig(output=tmp_path / layout, scene="object", layout=layout, resolution=32, num_train=24, num_test=4)
    )
    result = train(rvs_mc.config, scene, steps=300, preset="cpu-small", seed=0)
    trained = result.evals[-1].metrics["psnr"]
    print(f"rvs-mc on a {layout}-layout object after 300 steps: {trained:.2f} dB")
    assert trained > 14.0  # the white image alone scores about 10.5 dB


@pytest.mark.slow
def test_rvs_mc_learns_the_unbounded_scene_at_the_defaults(tmp_path):
    """Photographs are not composited on a colour: rvs-mc renders nerfacto's last_sample behind the density. With
    "random" there, the noise alone is brighter than the dark targets while the opacity is low and the radiance
    field's colour saturates at black: on this scene and seed it reached 14.03 dB at step 100 and fell to 12.94 by
    step 300 (this test: 16.16); with 32 + 16 density points every seed ended at 9.36 dB, the black image."""
    scene = generate_scene(SynthConfig(output=tmp_path / "unbounded", scene="unbounded", resolution=32, num_train=24, num_test=4))
    result = train(rvs_mc.config, scene, steps=300, preset="cpu-small", seed=0)
    untrained, trained = result.evals[0].metrics["psnr"], result.evals[-1].metrics["psnr"]
    print(f"rvs-mc on the unbounded scene, held-out PSNR: untrained {untrained:.2f} dB, after 300 steps {trained:.2f} dB")
    assert trained > untrained + 4.0 and trained > 14.0
