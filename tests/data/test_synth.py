"""Tests of the synthetic ground-truth scene generator (rvs_nerfstudio.data.synth)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rvs_nerfstudio.data.synth import SynthConfig, camera_poses, entrypoint, generate_scene, pixel_rays, render

SMALL = dict(resolution=24, num_train=6, num_test=2)


@pytest.fixture(scope="module")
def object_scene(tmp_path_factory) -> Path:
    return generate_scene(SynthConfig(output=tmp_path_factory.mktemp("synth") / "object", **SMALL))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _ray_sphere(origin: np.ndarray, direction: np.ndarray, center, radius: float) -> float:
    """Smallest positive t with |origin + t * direction - center| = radius (unit direction)."""
    oc = origin - np.asarray(center)
    b = 2 * direction @ oc
    c = oc @ oc - radius**2
    roots = np.roots([1.0, b, c])
    roots = roots[np.isreal(roots)].real
    return float(roots[roots > 0].min()) if (roots > 0).any() else np.inf


def test_same_seed_same_bytes_other_seed_other_poses(tmp_path, object_scene):
    again = generate_scene(SynthConfig(output=tmp_path / "again", **SMALL))
    first, second = _files(object_scene), _files(again)
    assert len([k for k in first if k.endswith(".png")]) == SMALL["num_train"] + SMALL["num_test"]
    assert first == second
    other_train, other_test, _ = camera_poses(SynthConfig(seed=1, **SMALL))
    train, test, _ = camera_poses(SynthConfig(**SMALL))
    assert not np.allclose(train, other_train)
    assert not np.allclose(test, other_test)


def test_train_and_test_cameras_differ():
    train, test, _ = camera_poses(SynthConfig(**SMALL))
    distances = np.linalg.norm(train[:, None, :3, 3] - test[None, :, :3, 3], axis=-1)
    assert distances.min() > 1e-3


def test_depth_matches_analytic_sphere_distance(object_scene):
    truth = json.loads((object_scene / "ground_truth.json").read_text())
    spheres = [obj for obj in truth["objects"] if obj["type"] == "sphere"]
    assert len(spheres) == 2
    # Rays aimed at each sphere's centre from a side where nothing else is in the way.
    for sphere, side in zip(spheres, ([-1.0, 0.0, 0.0], [0.0, 1.0, 0.0])):
        center, radius = np.array(sphere["center"]), sphere["radius"]
        origin = center + 3.0 * np.array(side)
        _, depth, hit = render("object", origin[None], (center - origin)[None], False)
        assert hit[0]
        assert depth[0] == pytest.approx(np.linalg.norm(origin - center) - radius, abs=1e-9)

    # Central rays of the views: the big sphere contains the origin, so every central ray hits it
    # (or something in front of it) and the nearest hit is never behind it.
    big = spheres[0]
    poses = json.loads((object_scene / "transforms.json").read_text())["frames"]
    exact = 0
    for frame in poses:
        c2w = np.array(frame["transform_matrix"])
        origin, direction = c2w[:3, 3], -c2w[:3, 2]
        _, depth, hit = render("object", origin[None], direction[None], True)
        expected = _ray_sphere(origin, direction / np.linalg.norm(direction), big["center"], big["radius"])
        assert hit[0] and np.isfinite(expected)
        assert depth[0] <= expected + 1e-9
        exact += abs(depth[0] - expected) < 1e-9
    assert exact >= len(poses) // 2


def test_depth_matches_analytic_box_and_wall_distance(object_scene):
    objects = json.loads((object_scene / "ground_truth.json").read_text())["objects"]
    box = next(obj for obj in objects if obj["type"] == "box")
    lo, hi = np.array(box["lo"]), np.array(box["hi"])
    center, half = (lo + hi) / 2, (hi - lo) / 2
    # From 3 units outside the centre of each face, straight at it (nothing else is in the way).
    for axis in range(3):
        for sign in (-1.0, 1.0):
            origin = center.copy()
            origin[axis] += sign * 3.0
            _, depth, hit = render("object", origin[None], (center - origin)[None], True)
            assert hit[0]
            assert depth[0] == pytest.approx(3.0 - half[axis], abs=1e-9)
    _, depth, hit = render("forward", np.array([[0.0, 1.5, 0.0]]), np.array([[0.0, 0.0, -1.0]]), True)
    assert hit[0] and depth[0] == pytest.approx(6.0, abs=1e-9)


def test_ray_missing_everything_gets_white_background():
    origins = np.array([[0.0, 0.0, 4.0], [3.0, 3.0, 3.0]])
    directions = np.array([[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    rgb, depth, hit = render("object", origins, directions, True)
    assert not hit.any()
    assert np.isinf(depth).all()
    np.testing.assert_array_equal(rgb, np.ones((2, 3)))


def test_specular_term_depends_on_view_direction():
    point = np.array([-0.35, 0.05, 0.1]) + 0.55 * np.array([0.3, 0.2, 1.0]) / np.linalg.norm([0.3, 0.2, 1.0])
    sides = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 1.0]]) / np.array([[1.0], [np.sqrt(2)]])
    origins = point + 2.0 * sides
    differences = {}
    for view_dependent in (False, True):
        rgb, depth, hit = render("object", origins, point - origins, view_dependent)
        assert hit.all()
        np.testing.assert_allclose(depth, 2.0, atol=1e-9)
        differences[view_dependent] = np.abs(rgb[0] - rgb[1]).max()
    assert differences[False] < 1e-12
    assert differences[True] > 0.05


def test_cameras_look_at_origin_with_orthonormal_rotations(object_scene):
    meta = json.loads((object_scene / "transforms.json").read_text())
    for frame in meta["frames"]:
        c2w = np.array(frame["transform_matrix"])
        rotation, position = c2w[:3, :3], c2w[:3, 3]
        np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-9)
        assert np.linalg.det(rotation) == pytest.approx(1.0)
        np.testing.assert_array_equal(c2w[3], [0, 0, 0, 1])
        to_origin = -position / np.linalg.norm(position)
        assert -rotation[:, 2] @ to_origin > 0.99
        assert position[2] > 0  # upper part of the sphere
        assert np.linalg.norm(position) == pytest.approx(4.0)


def test_pixels_agree_with_render(object_scene):
    meta = json.loads((object_scene / "transforms.json").read_text())
    grid = np.meshgrid(np.linspace(0, meta["h"] - 1, 7).astype(int), np.linspace(0, meta["w"] - 1, 7).astype(int))
    rows, cols = grid[0].ravel(), grid[1].ravel()
    hits = 0
    for frame in meta["frames"][:3] + meta["frames"][-1:]:
        image = np.asarray(Image.open(object_scene / frame["file_path"]), dtype=np.float64) / 255
        assert image.shape == (meta["h"], meta["w"], 3)
        c2w = np.array(frame["transform_matrix"])
        # OpenCV pixel centres (col + 0.5, row + 0.5); OpenGL camera axes (+y up, looking down -z).
        x, y = (cols + 0.5 - meta["cx"]) / meta["fl_x"], -(rows + 0.5 - meta["cy"]) / meta["fl_y"]
        camera = np.stack([x, y, -np.ones(len(rows))], -1)
        directions = camera @ c2w[:3, :3].T
        origins = np.tile(c2w[:3, 3], (len(rows), 1))
        rgb, _, hit = render("object", origins, directions, True)
        np.testing.assert_allclose(image[rows, cols], rgb, atol=1 / 255 + 1e-6)
        hits += hit.sum()
    assert 0 < hits < 4 * len(rows)


def test_nerfstudio_parses_dataset(object_scene):
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    parser = NerfstudioDataParserConfig(data=object_scene).setup()
    for split, count in (("train", SMALL["num_train"]), ("val", SMALL["num_test"]), ("test", SMALL["num_test"])):
        outputs = parser.get_dataparser_outputs(split)
        assert len(outputs.image_filenames) == count
        prefix = "test_" if split == "val" else f"{split}_"
        assert all(p.name.startswith(prefix) for p in outputs.image_filenames)
        assert (outputs.cameras.width == SMALL["resolution"]).all()
        assert (outputs.cameras.height == SMALL["resolution"]).all()


def test_refuses_non_empty_output(tmp_path):
    keep = tmp_path / "keep.txt"
    keep.write_text("precious")
    with pytest.raises(SystemExit) as error:
        generate_scene(SynthConfig(output=tmp_path, **SMALL))
    message = str(error.value.code)
    assert "--overwrite" in message and "\n" not in message
    assert keep.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]

    generate_scene(SynthConfig(output=tmp_path, overwrite=True, **SMALL))
    assert keep.read_text() == "precious"
    assert (tmp_path / "transforms.json").is_file()


@pytest.mark.parametrize("option", ["resolution", "num_train", "num_test"])
def test_bad_options_exit_with_one_line(tmp_path, option):
    with pytest.raises(SystemExit) as error:
        generate_scene(SynthConfig(output=tmp_path / "out", **{**SMALL, option: 0}))
    message = str(error.value.code)
    assert message.startswith("rvs-synth: ") and "\n" not in message
    assert option.replace("_", "-") in message
    assert not (tmp_path / "out").exists()


def test_forward_scene_is_forward_facing_with_depth_range(tmp_path):
    config = SynthConfig(output=tmp_path / "forward", scene="forward", **SMALL)
    train, _, intrinsics = camera_poses(config)
    views = -train[:, :3, 2]
    assert (views @ views.T).min() > 0.9

    c2w = train[0]
    u, v = np.meshgrid(np.arange(intrinsics.w) + 0.5, np.arange(intrinsics.h) + 0.5)
    x, y = (u - intrinsics.cx) / intrinsics.fl_x, -(v - intrinsics.cy) / intrinsics.fl_y
    camera = np.stack([x, y, -np.ones_like(u)], -1)
    directions = camera.reshape(-1, 3) @ c2w[:3, :3].T
    _, depth, hit = render("forward", np.tile(c2w[:3, 3], (len(directions), 1)), directions, True)
    assert hit.all()  # the wall fills the view
    assert depth.max() / depth.min() > 1.5

    generate_scene(config)
    meta = json.loads((tmp_path / "forward" / "transforms.json").read_text())
    assert len(meta["train_filenames"]) == SMALL["num_train"]


def test_entrypoint_writes_and_summarises(tmp_path, monkeypatch, capsys):
    out = tmp_path / "cli"
    argv = ["rvs-synth", "--output", str(out), "--resolution", "8", "--num-train", "2", "--num-test", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    entrypoint()
    assert "2 train + 1 test" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "images").iterdir()) == ["test_000.png", "train_000.png", "train_001.png"]
    assert Image.open(out / "images" / "train_000.png").size == (8, 8)


def test_unbounded_scene_spans_near_to_far_under_a_photo_sky():
    """Cameras circle the centre inside the scene; their rays end from about 1 to 80 away, and rays that reach the
    dome show the photograph: the pixel at the hit point's azimuth (4 repeats) and elevation, unlit."""
    config = SynthConfig(scene="unbounded", resolution=32, num_train=12, num_test=2)
    train, _, intrinsics = camera_poses(config)
    radii = np.linalg.norm(train[:, :2, 3], axis=1)
    assert (radii > 2.5).all() and (radii < 3.5).all() and (train[:, 2, 3] > 0.6).all()
    depths = []
    for c2w in train:
        _, depth, hit = render("unbounded", *pixel_rays(c2w, intrinsics))
        assert hit.all()  # no background colour: the dome and the ground close the scene
        depths.append(depth)
    depths = np.concatenate(depths)
    assert depths.min() < 2.0 and depths.max() > 79.0 and ((depths > 5) & (depths < 30)).mean() > 0.05

    from matplotlib import cbook

    photo = np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")) / 255
    origin = np.array([[0.0, 0.0, 1.5]])
    for azimuth_deg, elevation_deg in [(-170.0, 40.0), (10.0, 70.0), (100.0, 20.0)]:
        azimuth, elevation = np.radians(azimuth_deg), np.radians(elevation_deg)
        direction = np.array([[np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)]])
        rgb, depth, _ = render("unbounded", origin, direction)
        point = origin + depth[:, None] * direction
        assert np.linalg.norm(point) == pytest.approx(80.0)
        hit_azimuth = (np.arctan2(point[0, 1], point[0, 0]) / (2 * np.pi) + 0.5) * 4 % 1
        hit_elevation = np.arcsin(point[0, 2] / 80.0) / (np.pi / 2)
        row, column = int((1 - hit_elevation) * photo.shape[0]), int(hit_azimuth * photo.shape[1])
        np.testing.assert_allclose(rgb[0], photo[row, column])
