"""Tests of the LLFF and auto-detecting data parsers (rvs_nerfstudio.data.parsers) on synthetic scenes."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import shutil
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
import torch
import tyro
from PIL import Image

from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
from nerfstudio.data.dataparsers.colmap_dataparser import ColmapDataParserConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.data.datasets.base_dataset import InputDataset
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.plugins.registry_dataparser import DataParserSpecification
from rvs_nerfstudio.data.parsers import (
    BACKGROUND_METADATA_KEY,
    AutoDataParserConfig,
    DataError,
    LLFFDataParser,
    LLFFDataParserConfig,
    llff_to_opengl,
)
from rvs_nerfstudio.data.synth import SynthConfig, camera_poses, generate_scene, opengl_to_llff, pixel_rays, render
from tests.helpers import run_cli, train

LLFF = dict(scene="forward", layout="llff", resolution=32, num_train=14, num_test=4, llff_factors=(2, 4))
"""18 views: the held-out views are 0, 8 and 16."""
BLENDER = dict(scene="object", layout="blender", resolution=24, num_train=5, num_test=2)


@pytest.fixture(scope="module")
def llff_scene(tmp_path_factory) -> Path:
    return generate_scene(SynthConfig(output=tmp_path_factory.mktemp("llff") / "forward", **LLFF))


@pytest.fixture(scope="module")
def blender_scene(tmp_path_factory) -> Path:
    return generate_scene(SynthConfig(output=tmp_path_factory.mktemp("blender") / "object", **BLENDER))


def _all_poses(options: dict) -> np.ndarray:
    """The generator's camera-to-world poses [N, 4, 4] in LLFF order: train views, then test views."""
    train_poses, test_poses, _ = camera_poses(SynthConfig(**options))
    return np.concatenate([train_poses, test_poses])


def _parse(root: Path, **options) -> LLFFDataParser:
    return LLFFDataParserConfig(data=root, **options).setup()


def _to_generator_world(points: np.ndarray, directions: np.ndarray, outputs) -> tuple[np.ndarray, np.ndarray]:
    """Undo the parser's transform: points [N, 3] and directions [N, 3] back in the generator's world."""
    transform = outputs.dataparser_transform.double().numpy()
    rotation, translation = transform[:, :3], transform[:, 3]
    return (points / outputs.dataparser_scale - translation) @ rotation, directions @ rotation


def _hashes(root: Path) -> dict[str, str]:
    """SHA-256 of every file and an entry for every folder under ``root``."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize("layout", ["llff", "blender"])
def test_synthetic_layouts_are_deterministic(tmp_path, layout):
    options = dict(resolution=8, num_train=2, num_test=1, layout=layout, llff_factors=(2,))
    first = _hashes(generate_scene(SynthConfig(output=tmp_path / "first", **options)))
    assert first == _hashes(generate_scene(SynthConfig(output=tmp_path / "second", **options)))
    assert "ground_truth.json" in first and len(first) > 5


@pytest.mark.parametrize("factors", [(3,), (1, 2), (16,)])
def test_synthetic_llff_layout_rejects_factors_that_do_not_divide(tmp_path, factors):
    with pytest.raises(SystemExit) as error:
        generate_scene(SynthConfig(output=tmp_path / "out", resolution=8, layout="llff", llff_factors=factors))
    assert "--llff-factors" in str(error.value.code) and "\n" not in str(error.value.code)
    assert not (tmp_path / "out").exists()


def test_pose_conversion_follows_the_documented_llff_axes():
    # A camera at (1, 2, 3) looking down world -z with +y up: OpenGL axes right = x, up = y, back = z.
    # LLFF's columns are down = -y, right = x, back = z, then the centre and (h, w, focal).
    row = np.array([[0, 1, 0, 1, 30], [-1, 0, 0, 2, 40], [0, 0, 1, 3, 50]], dtype=float).ravel()
    c2w, hwf, bounds = llff_to_opengl(np.concatenate([row, [0.5, 9.0]])[None])
    np.testing.assert_array_equal(c2w[0], [[1, 0, 0, 1], [0, 1, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]])
    np.testing.assert_array_equal(hwf, [[30, 40, 50]])
    np.testing.assert_array_equal(bounds, [[0.5, 9.0]])

    # The synthetic writer's conversion is its exact inverse.
    poses = _all_poses(LLFF)
    _, _, intrinsics = camera_poses(SynthConfig(**LLFF))
    rows = np.concatenate([opengl_to_llff(poses, intrinsics).reshape(-1, 15), np.ones((len(poses), 2))], axis=1)
    np.testing.assert_allclose(llff_to_opengl(rows)[0], poses, atol=1e-12)


def test_llff_round_trip_matches_generator_cameras(llff_scene):
    outputs = _parse(llff_scene, downscale_factor=2).all_views
    poses = _all_poses(LLFF)
    parsed = outputs.cameras.camera_to_worlds.double().numpy()
    assert parsed.shape == (len(poses), 3, 4)

    # The parser's transform is a similarity: a rotation (right-handed) and a positive scale.
    rotation = outputs.dataparser_transform[:, :3].double().numpy()
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-6)
    assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-6)

    # Camera centres and viewing directions (-z) map back onto the generator's.
    centres, views = _to_generator_world(parsed[:, :, 3], -parsed[:, :, 2], outputs)
    np.testing.assert_allclose(centres, poses[:, :3, 3], atol=1e-5)
    np.testing.assert_allclose(views, -poses[:, :3, 2], atol=1e-6)
    _, ups = _to_generator_world(parsed[:, :, 3], parsed[:, :, 1], outputs)
    np.testing.assert_allclose(ups, poses[:, :3, 1], atol=1e-6)

    # Auto-orient: the mean camera up is world +z, and the cameras are centred on the origin.
    mean_up = parsed[:, :, 1].mean(axis=0)
    assert mean_up[2] / np.linalg.norm(mean_up) > 0.999
    np.testing.assert_allclose(parsed[:, :, 3].mean(axis=0), 0.0, atol=1e-6)

    # Scale: the nearest ground-truth depth (along the camera axis) of all views lands at distance 1.
    _, _, intrinsics = camera_poses(SynthConfig(**LLFF))
    nearest = math.inf
    for c2w in poses:
        origins, directions = pixel_rays(c2w, intrinsics)
        _, depth, hit = render("forward", origins, directions)
        assert hit.all()
        unit = directions / np.linalg.norm(directions, axis=1, keepdims=True)
        nearest = min(nearest, (depth * (unit @ -c2w[:3, 2])).min())
    assert outputs.dataparser_scale == pytest.approx(1.0 / nearest, rel=1e-9)
    parsed_distances = np.linalg.norm(parsed[:, None, :, 3] - parsed[None, :, :, 3], axis=-1)
    distances = np.linalg.norm(poses[:, None, :3, 3] - poses[None, :, :3, 3], axis=-1)
    np.testing.assert_allclose(parsed_distances / outputs.dataparser_scale, distances, atol=1e-5)


def test_scene_box_holds_every_visible_surface_point(llff_scene):
    outputs = _parse(llff_scene, downscale_factor=4).all_views
    low, high = outputs.scene_box.aabb.double().numpy()
    for i in range(len(outputs.image_filenames)):
        rays = outputs.cameras.generate_rays(camera_indices=i)
        origins = rays.origins.reshape(-1, 3).double().numpy()
        directions = rays.directions.reshape(-1, 3).double().numpy()
        _, depth, hit = render("forward", *_to_generator_world(origins, directions, outputs))
        assert hit.all()
        points = origins + (depth * outputs.dataparser_scale)[:, None] * directions
        assert (points >= low - 1e-4).all() and (points <= high + 1e-4).all()


def test_held_out_views_are_every_eighth(llff_scene):
    parser = _parse(llff_scene)
    names = [p.name for p in parser.all_views.image_filenames]
    assert names == [f"{i:03d}.png" for i in range(18)]
    for split, expected in (("train", [i for i in range(18) if i % 8]), ("val", [0, 8, 16]), ("test", [0, 8, 16])):
        outputs = parser.get_dataparser_outputs(split)
        assert [p.name for p in outputs.image_filenames] == [names[i] for i in expected]
        np.testing.assert_array_equal(
            outputs.cameras.camera_to_worlds, parser.all_views.cameras.camera_to_worlds[expected]
        )
    held_out = _parse(llff_scene, llffhold=5).get_dataparser_outputs("test")
    assert [p.name for p in held_out.image_filenames] == ["000.png", "005.png", "010.png", "015.png"]


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_downscaled_images_load_at_their_resolution_with_matching_intrinsics(llff_scene, factor):
    outputs = _parse(llff_scene, downscale_factor=factor).get_dataparser_outputs("train")
    _, _, full = camera_poses(SynthConfig(**LLFF))
    size = LLFF["resolution"] // factor
    folder = "images" if factor == 1 else f"images_{factor}"
    assert {p.parent.name for p in outputs.image_filenames} == {folder}
    cameras = outputs.cameras
    assert (cameras.width == size).all() and (cameras.height == size).all()
    torch.testing.assert_close(cameras.fx, torch.full_like(cameras.fx, full.fl_x / factor))
    torch.testing.assert_close(cameras.fy, torch.full_like(cameras.fy, full.fl_y / factor))
    torch.testing.assert_close(cameras.cx, torch.full_like(cameras.cx, full.cx / factor))
    torch.testing.assert_close(cameras.cy, torch.full_like(cameras.cy, full.cy / factor))

    # Rays of the parsed cameras, taken back to the generator's world, see each image's pixels.
    dataset = InputDataset(outputs)
    for i in (0, len(dataset) - 1):
        image = dataset[i]["image"].double().numpy()
        assert image.shape == (size, size, 3)
        rays = cameras.generate_rays(camera_indices=i)
        origins, directions = (x.reshape(-1, 3).double().numpy() for x in (rays.origins, rays.directions))
        rgb, _, _ = render("forward", *_to_generator_world(origins, directions, outputs))
        error = np.abs(image - rgb.reshape(size, size, 3)).max(axis=-1)
        assert (error <= 1 / 255 + 1e-6).mean() > 0.97


def test_blender_layout_is_detected_and_composited_on_white(blender_scene):
    config = AutoDataParserConfig(data=blender_scene).detect()
    assert isinstance(config, BlenderDataParserConfig) and config.data == blender_scene
    assert config.alpha_color == "white"
    parser = config.setup()
    assert len(parser.get_dataparser_outputs("val").image_filenames) == BLENDER["num_test"]
    outputs = parser.get_dataparser_outputs("train")
    assert len(outputs.image_filenames) == BLENDER["num_train"]
    train_poses, _, intrinsics = camera_poses(SynthConfig(**BLENDER))
    dataset = InputDataset(outputs)
    for i in (0, 3):
        raw = np.asarray(Image.open(outputs.image_filenames[i]))
        rgb, _, hit = render("object", *pixel_rays(train_poses[i], intrinsics))
        hit = hit.reshape(raw.shape[:2])
        assert raw.shape[-1] == 4 and 0 < hit.mean() < 1
        np.testing.assert_array_equal(raw[..., 3], np.where(hit, 255, 0))
        assert (raw[~hit, :3] == 0).all()  # transparent black: only the parser's white background makes it white
        image = dataset[i]["image"].double().numpy()
        np.testing.assert_allclose(image, rgb.reshape(image.shape), atol=1 / 255 + 1e-6)
        np.testing.assert_array_equal(image[~hit], 1.0)
    # Through auto-data, the outputs tell the model the white the images were composited on.
    metadata = AutoDataParserConfig(data=blender_scene).setup().get_dataparser_outputs("train").metadata
    torch.testing.assert_close(metadata[BACKGROUND_METADATA_KEY], torch.ones(3))


def scaled_copy(scene: Path, target: Path, factor: float) -> Path:
    """A copy of a Blender-layout scene with every camera centre ``factor`` times as far from the origin."""
    shutil.copytree(scene, target)
    for split in ("train", "val", "test"):
        path = target / f"transforms_{split}.json"
        meta = json.loads(path.read_text())
        for frame in meta["frames"]:
            for row in frame["transform_matrix"][:3]:
                row[3] *= factor
        path.write_text(json.dumps(meta))
    return target


def test_blender_cameras_are_fitted_to_the_unit_cube_whatever_the_world_scale(tmp_path, blender_scene):
    """auto-data gives the same cameras for the scene at world scales 1 and 4: the largest training camera
    coordinate is 1 (nerfstudio-data's auto-scale). Without the fit the cameras keep the world scale."""
    far = scaled_copy(blender_scene, tmp_path / "x4", 4.0)
    train_poses, test_poses, _ = camera_poses(SynthConfig(**BLENDER))
    extent = np.abs(train_poses[:, :3, 3]).max()
    fitted = {}
    for name, data in (("x1", blender_scene), ("x4", far)):
        parser = AutoDataParserConfig(data=data).setup()
        fitted[name] = [parser.get_dataparser_outputs(split) for split in ("train", "test")]
        unfitted = AutoDataParserConfig(data=data, blender_fit_cameras=False).setup().get_dataparser_outputs("train")
        world = 4.0 if name == "x4" else 1.0
        np.testing.assert_allclose(unfitted.cameras.camera_to_worlds[:, :, 3].numpy(), world * train_poses[:, :3, 3], rtol=1e-5)
    for split, poses in enumerate((train_poses, test_poses)):
        for name, world in (("x1", 1.0), ("x4", 4.0)):
            outputs = fitted[name][split]
            np.testing.assert_allclose(outputs.cameras.camera_to_worlds[:, :, 3].numpy(), poses[:, :3, 3] / extent, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(outputs.cameras.camera_to_worlds[:, :, :3].numpy(), poses[:, :3, :3], atol=1e-6)
            assert outputs.dataparser_scale == pytest.approx(1 / (world * extent))


def test_blender_cameras_that_cannot_be_fitted_fail_in_one_line(tmp_path, blender_scene):
    broken = shutil.copytree(blender_scene, tmp_path / "broken")
    (broken / "transforms_train.json").write_text('{"frames": [{"transform_matrix": "oops"}]}')
    with pytest.raises(DataError, match="^auto-data: cannot read the camera poses of .*transforms_train.json") as error:
        AutoDataParserConfig(data=broken).setup()
    assert "\n" not in str(error.value)


def _train_metadata(scene: Path) -> dict:
    return AutoDataParserConfig(data=scene).setup().get_dataparser_outputs("train").metadata


def test_auto_data_names_the_white_around_an_rgb_object_but_no_background_for_scenes(tmp_path):
    """RGB images keep no alpha: the object scene on white is recognised by its borders, the others are not."""
    for scene, expected in (("object", torch.ones(3)), ("forward", None), ("unbounded", None)):
        root = generate_scene(SynthConfig(output=tmp_path / scene, scene=scene, resolution=16, num_train=10, num_test=1))
        metadata = _train_metadata(root)
        if expected is None:
            assert BACKGROUND_METADATA_KEY not in metadata, scene
        else:
            torch.testing.assert_close(metadata[BACKGROUND_METADATA_KEY], expected)


def _paint_borders(scene: Path, colour, off_by: int = 0) -> None:
    """Paints a one-pixel frame of ``colour`` (8-bit) on every image; the last image's corner is ``off_by`` levels off."""
    files = sorted((scene / "images").glob("*.png"))
    for index, path in enumerate(files):
        pixels = np.asarray(Image.open(path).convert("RGB")).copy()
        for border in (pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]):
            border[:] = colour
        if index == len(files) - 1:
            pixels[0, 0, 1] += off_by
        Image.fromarray(pixels).save(path)


@pytest.mark.parametrize("off_by, detected", [(0, True), (3, True), (4, False)])
def test_plain_border_colour_is_the_frame_shared_by_every_image_within_three_levels(tmp_path, off_by, detected):
    scene = generate_scene(SynthConfig(output=tmp_path / "ns", scene="forward", resolution=16, num_train=6, num_test=1))
    _paint_borders(scene, (51, 102, 153), off_by)
    metadata = _train_metadata(scene)
    if detected:
        torch.testing.assert_close(metadata[BACKGROUND_METADATA_KEY], torch.tensor([51, 102, 153]) / 255.0)
    else:
        assert BACKGROUND_METADATA_KEY not in metadata


@pytest.mark.parametrize("layout", ["nerfstudio", "blender", "llff"])
def test_unbounded_scene_round_trips_through_every_layout(tmp_path, layout):
    """Each parsed training camera, taken back to the generator's world, is one of the generator's cameras, and
    its rays see the image's pixels there (the photo sky ~80 away included)."""
    options = dict(scene="unbounded", layout=layout, resolution=32, num_train=9, num_test=2)
    parser = AutoDataParserConfig(data=generate_scene(SynthConfig(output=tmp_path / layout, **options))).setup()
    outputs = parser.get_dataparser_outputs("train")
    train_poses, test_poses, _ = camera_poses(SynthConfig(**options))
    poses = np.concatenate([train_poses, test_poses])
    dataset = InputDataset(outputs)
    assert len(dataset) == 9  # LLFF holds out views 0 and 8 of the 11 instead of the 2 test views
    cameras = outputs.cameras
    for i in range(len(dataset)):
        c2w = cameras.camera_to_worlds[i].double().numpy()
        (centre,), (view,) = _to_generator_world(c2w[None, :, 3], -c2w[None, :, 2], outputs)
        match = np.linalg.norm(poses[:, :3, 3] - centre, axis=1).argmin()
        np.testing.assert_allclose(centre, poses[match, :3, 3], atol=1e-4)
        np.testing.assert_allclose(view, -poses[match, :3, 2], atol=1e-5)
        rays = cameras.generate_rays(camera_indices=i)
        origins, directions = (x.reshape(-1, 3).double().numpy() for x in (rays.origins, rays.directions))
        rgb, depth, hit = render("unbounded", *_to_generator_world(origins, directions, outputs))
        assert hit.all() and depth.max() > 60
        image = dataset[i]["image"].double().numpy()
        error = np.abs(image - rgb.reshape(image.shape)).max(axis=-1)
        assert (error <= 1 / 255 + 1e-6).mean() > 0.97


def test_auto_detects_each_layout(tmp_path, llff_scene, blender_scene):
    nerfstudio_scene = generate_scene(SynthConfig(output=tmp_path / "ns", resolution=8, num_train=2, num_test=1))
    for colmap_path in ("sparse/0", "colmap/sparse/0"):
        (tmp_path / colmap_path.replace("/", "_") / colmap_path).mkdir(parents=True)
    shutil.copytree(llff_scene, tmp_path / "llff_with_sparse")
    (tmp_path / "llff_with_sparse" / "sparse" / "0").mkdir(parents=True)
    options = dict(llff=LLFFDataParserConfig(data=Path("ignored"), downscale_factor=2))
    cases = [
        (nerfstudio_scene, NerfstudioDataParserConfig, None),
        (blender_scene, BlenderDataParserConfig, None),
        (llff_scene, LLFFDataParserConfig, None),
        (tmp_path / "llff_with_sparse", LLFFDataParserConfig, None),
        (tmp_path / "sparse_0", ColmapDataParserConfig, Path("sparse/0")),
        (tmp_path / "colmap_sparse_0", ColmapDataParserConfig, Path("colmap/sparse/0")),
    ]
    for data, expected, colmap_path in cases:
        config = AutoDataParserConfig(data=data, **options).detect()
        assert type(config) is expected, data
        assert config.data == data
        if colmap_path is not None:
            assert config.colmap_path == colmap_path
    llff = AutoDataParserConfig(data=llff_scene, **options)
    assert llff.detect().downscale_factor == 2  # the nested options are kept
    assert llff.llff.data == Path("ignored")  # and the auto config itself is left as it was
    parser = llff.setup()
    assert isinstance(parser.parser, LLFFDataParser)
    assert len(parser.get_dataparser_outputs("train").image_filenames) == 15


def test_auto_fails_in_one_line_listing_what_it_looked_for(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError) as error:
        AutoDataParserConfig(data=tmp_path).setup()
    message = str(error.value.code)
    assert "\n" not in message and str(tmp_path) in message
    for name in ("transforms.json", "transforms_train.json", "poses_bounds.npy", "sparse/0", "colmap/sparse/0"):
        assert name in message
    assert "nerfstudio-data" in message

    with pytest.raises(DataError) as error:
        AutoDataParserConfig(data=tmp_path / "missing").detect()
    assert "is not a folder" in str(error.value.code) and "\n" not in str(error.value.code)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _save_rows(root: Path, edit) -> None:
    rows = np.load(root / "poses_bounds.npy")
    np.save(root / "poses_bounds.npy", edit(rows))


def _nan_pose(rows: np.ndarray) -> np.ndarray:
    rows[5, 3] = np.nan
    return rows


BAD_INPUTS = {
    "missing poses_bounds.npy": (lambda root: (root / "poses_bounds.npy").unlink(), {}, ["npy not found"]),
    "short poses_bounds.npy": (lambda root: _truncate(root / "poses_bounds.npy"), {}, ["cannot read", "npy"]),
    "poses without bounds": (lambda root: _save_rows(root, lambda r: r[:, :15]), {}, ["shape (18, 15)", "17"]),
    "image count": (lambda root: (root / "images_4" / "017.png").unlink(), {}, ["17 files", "18 poses"]),
    "unreadable image": (lambda root: (root / "images_4" / "003.png").write_bytes(b"?"), {}, ["read image", "003.png"]),
    "truncated image": (lambda root: _truncate(root / "images_4" / "005.png"), {}, ["cannot read image", "005.png"]),
    "NaN pose": (lambda root: _save_rows(root, _nan_pose), {}, ["NaN", "rows [5]"]),
    "no such factor": (lambda root: None, {"downscale_factor": 3}, ["images_3/", "factors present: 1, 2, 4"]),
    "images of another factor": (
        lambda root: [shutil.copy(p, root / "images_2" / p.name) for p in (root / "images_4").iterdir()],
        {"downscale_factor": 2},
        ["8x8 pixels", "16x16", "downscale factor"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_in_one_line_and_leaves_data_untouched(tmp_path, llff_scene, case):
    damage, options, expected = BAD_INPUTS[case]
    root = shutil.copytree(llff_scene, tmp_path / "scene")
    damage(root)
    before = _hashes(root)
    with pytest.raises(DataError) as error:
        _parse(root, **options).get_dataparser_outputs("train")
    message = str(error.value.code)
    assert message.startswith("llff-data: ") and "\n" not in message
    for text in expected:
        assert text in message
    assert _hashes(root) == before


def test_parsers_are_registered_as_dataparser_entry_points():
    found = {e.name: e for e in entry_points(group="nerfstudio.dataparser_configs")}
    for name, config_class in (("llff-data", LLFFDataParserConfig), ("auto-data", AutoDataParserConfig)):
        spec = found[name].load()
        assert isinstance(spec, DataParserSpecification) and spec.description
        assert type(spec.config) is config_class


def test_auto_default_is_overridden_by_an_explicit_subcommand():
    from nerfstudio.configs.dataparser_configs import all_dataparsers
    from rvs_nerfstudio.method_configs import rvs_nerfacto

    assert {"llff-data", "auto-data"} <= set(all_dataparsers)
    config = copy.deepcopy(rvs_nerfacto.config)
    assert config.pipeline.datamanager.dataparser == AutoDataParserConfig()
    parsed = {}
    for name, args in {
        "default": [],
        "auto": ["auto-data", "--llff.downscale-factor", "2"],
        "nerfstudio": ["nerfstudio-data", "--downscale-factor", "2"],
        "llff": ["llff-data", "--llffhold", "4"],
    }.items():
        trainer = tyro.cli(TrainerConfig, default=config, args=["--data", "scene", *args])
        assert trainer.data == Path("scene")
        parsed[name] = trainer.pipeline.datamanager.dataparser
    assert parsed["default"] == AutoDataParserConfig()
    assert type(parsed["auto"]) is AutoDataParserConfig and parsed["auto"].llff.downscale_factor == 2
    assert type(parsed["nerfstudio"]) is NerfstudioDataParserConfig and parsed["nerfstudio"].downscale_factor == 2
    assert type(parsed["llff"]) is LLFFDataParserConfig and parsed["llff"].llffhold == 4


@pytest.mark.slow
def test_ns_train_reports_an_unknown_layout_in_one_line(tmp_path):
    (tmp_path / "scene").mkdir()
    result = run_cli(
        ["ns-train", "rvs-nerfacto", "--data", tmp_path / "scene", "--output-dir", tmp_path / "runs"]
        + ["--vis", "tensorboard"],
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("auto-data:")]
    assert "poses_bounds.npy" in line and "colmap/sparse/0" in line


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["llff", "blender"])
def test_ns_train_and_ns_eval_run_on_paper_layouts(tmp_path, blender_scene, layout):
    """As on the paper's cards: `--data <folder>` alone, the layout detected, LLFF at its default `images_4`."""
    if layout == "llff":
        data = generate_scene(SynthConfig(output=tmp_path / "forward", **{**LLFF, "resolution": 64, "llff_factors": (4,)}))
    else:
        data = blender_scene
    before = _hashes(data)
    config = train("rvs-nerfacto", data, tmp_path / "runs", 10)
    output = tmp_path / "metrics.json"
    run_cli(["ns-eval", "--load-config", config, "--output-path", output])
    metrics = json.loads(output.read_text())["results"]
    print(f"ns-eval on {layout}:", metrics)
    assert math.isfinite(metrics["psnr"]) and 3 < metrics["psnr"] < 60
    assert _hashes(data) == before
