"""Deterministic synthetic scenes with known ground truth, written as nerfstudio, LLFF or Blender datasets.

Every pixel is ray traced analytically in numpy (ray-sphere, ray-box and ray-plane intersections,
nearest hit wins), so the geometry (``render`` returns the exact hit distance) and the colour of any
ray are known exactly. World axes are z-up for ``"object"`` and ``"unbounded"``, y-up for ``"forward"``.

- ``"object"``: a 360° object-centric scene inside [-1, 1]^3 on a pure white background: a large
  sphere with a checker texture in spherical coordinates, a smaller solid blue sphere and a green
  checkered axis-aligned box. Cameras sit at random azimuths and elevations (15°-65°) on a sphere
  of radius 4 and look at the origin.
- ``"forward"``: an LLFF-like forward-facing scene: a textured wall (the plane z = -6, which fills
  every view) with a striped sphere, a checkered box and a checkered sphere at depths ~2-5 in
  front of it. Cameras sit at random points of a disc of radius 0.5 in the plane z = 0 and all look
  towards -z (at slightly jittered points near (0, 0, -4)).
- ``"unbounded"``: an unbounded 360° scene like mip-NeRF 360's garden: a checkered sphere and box
  at the centre of a checkered ground plane (z = 0), a ring of six pillars at radius 7, three large
  spheres 20-26 away, all under a sky dome of radius 80 that shows a real photograph (matplotlib's
  ``grace_hopper.jpg``, repeated around the horizon, unlit). Cameras circle the centre at radius
  2.6-3.4 and height 0.7-1.3 and look at it (jittered), so rays end anywhere from about 1 to 80 away.

Three layouts are written, all with the same ground truth (``ground_truth.json``):

- ``"nerfstudio"``: ``images/`` and ``transforms.json`` with explicit train/val/test file lists.
- ``"llff"``: the LLFF layout of the paper's forward-facing scenes: ``images/`` at full resolution,
  ``images_{f}/`` rendered at 1/f resolution under other file names (``IMG_0003.PNG`` and
  ``003.png``: only their sorted order pairs them) and ``poses_bounds.npy``. Its rows list the train
  views, then the test views; LLFF splits by index. Each row is the 3x5 matrix
  [down | right | back | camera centre | (height, width, focal)] flattened row-major, then the nearest
  and farthest ground-truth depth (along the camera axis) seen in the view.
- ``"blender"``: the layout of the Blender synthetic scenes: ``transforms_{train,val,test}.json``
  (``camera_angle_x``; ``file_path`` without extension, e.g. ``./train/r_0``) and RGBA PNGs that are
  transparent black where the ray misses every object. The val split lists the test views.

Shading is albedo * (ambient + Lambert diffuse from a fixed directional light) plus, optionally,
a view-dependent Blinn-Phong specular term, clipped to [0, 1]. Cameras are pinholes with a 40° field
of view; poses are camera-to-world matrices in the OpenGL/Blender convention nerfstudio uses
(camera looks down its -z axis, +y up, +x right) and pixel (row i, column j) is the ray through the
pixel centre (j + 0.5, i + 0.5).
"""

import functools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import tyro
from PIL import Image
from rich.console import Console
from rich.progress import track

SceneName = Literal["object", "forward", "unbounded"]
Layout = Literal["nerfstudio", "llff", "blender"]
Vec3 = tuple[float, float, float]

EPS = 1e-6
"""Smallest hit distance accepted (avoids self-intersections)."""
AMBIENT = 0.3
SPECULAR = 0.5
SHININESS = 32.0
FOV_DEG = 40.0


def _checker(index: np.ndarray, colors: tuple[Vec3, Vec3]) -> np.ndarray:
    """Pick ``colors[0]`` for even and ``colors[1]`` for odd cell indices [N] -> albedo [N, 3]."""
    odd = (index.astype(np.int64) % 2).astype(bool)
    return np.where(odd[:, None], np.asarray(colors[1]), np.asarray(colors[0]))


def _sphere_hits(center: Vec3, radius: float, o: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Nearest hit distance [N] of a sphere (from outside or inside; inf on miss) for origins and unit directions [N, 3]."""
    oc = o - np.asarray(center)
    b = np.einsum("ij,ij->i", oc, d)
    disc = b * b - (np.einsum("ij,ij->i", oc, oc) - radius**2)
    root = np.sqrt(np.maximum(disc, 0.0))
    t = np.where(-b - root > EPS, -b - root, -b + root)
    return np.where((disc >= 0) & (t > EPS), t, np.inf)


@dataclass(frozen=True)
class Sphere:
    """Sphere with a checker of ``cells`` (longitude, latitude) cells in spherical coordinates."""

    center: Vec3
    radius: float
    colors: tuple[Vec3, Vec3]
    cells: tuple[int, int] = (1, 1)

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Nearest hit distance [N] (inf on miss) for origins [N, 3] and unit directions [N, 3]."""
        return _sphere_hits(self.center, self.radius, o, d)

    def normal(self, p: np.ndarray) -> np.ndarray:
        """Outward unit normal [N, 3] at surface points [N, 3]."""
        return (p - np.asarray(self.center)) / self.radius

    def albedo(self, p: np.ndarray) -> np.ndarray:
        """Albedo [N, 3] at surface points [N, 3]."""
        q = self.normal(p)
        u = np.arctan2(q[:, 1], q[:, 0]) / (2 * np.pi) + 0.5
        v = np.arccos(np.clip(q[:, 2], -1.0, 1.0)) / np.pi
        return _checker(np.floor(u * self.cells[0]) + np.floor(v * self.cells[1]), self.colors)


@dataclass(frozen=True)
class Box:
    """Axis-aligned box from ``lo`` to ``hi``; each face has a checker of square cells of side ``cell``."""

    lo: Vec3
    hi: Vec3
    colors: tuple[Vec3, Vec3]
    cell: float

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Nearest hit distance [N] (inf on miss) for origins [N, 3] and unit directions [N, 3]."""
        with np.errstate(divide="ignore", invalid="ignore"):
            t_lo = (np.asarray(self.lo) - o) / d
            t_hi = (np.asarray(self.hi) - o) / d
        t_near = np.minimum(t_lo, t_hi).max(axis=1)
        t_far = np.maximum(t_lo, t_hi).min(axis=1)
        t = np.where(t_near > EPS, t_near, t_far)
        return np.where((t_near <= t_far) & (t > EPS), t, np.inf)

    def normal(self, p: np.ndarray) -> np.ndarray:
        """Outward unit normal [N, 3] of the face containing each surface point [N, 3]."""
        lo, hi = np.asarray(self.lo), np.asarray(self.hi)
        q = (p - (lo + hi) / 2) / ((hi - lo) / 2)
        rows, axis = np.arange(len(p)), np.abs(q).argmax(axis=1)
        n = np.zeros_like(p)
        n[rows, axis] = np.sign(q[rows, axis])
        return n

    def albedo(self, p: np.ndarray) -> np.ndarray:
        """Albedo [N, 3] at surface points [N, 3]: a checker in the two in-face coordinates."""
        cells = np.floor(p / self.cell)
        cells[self.normal(p) != 0] = 0.0
        return _checker(cells.sum(axis=1), self.colors)


@dataclass(frozen=True)
class Plane:
    """Infinite plane ``x[axis] = offset`` with a checker of square cells of side ``cell``."""

    axis: int
    offset: float
    colors: tuple[Vec3, Vec3]
    cell: float

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Hit distance [N] (inf on miss) for origins [N, 3] and unit directions [N, 3]."""
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (self.offset - o[:, self.axis]) / d[:, self.axis]
        return np.where(t > EPS, t, np.inf)

    def normal(self, p: np.ndarray) -> np.ndarray:
        """Unit normal [N, 3] along +axis (``render`` turns it towards the ray)."""
        n = np.zeros_like(p)
        n[:, self.axis] = 1.0
        return n

    def albedo(self, p: np.ndarray) -> np.ndarray:
        """Albedo [N, 3] at surface points [N, 3]."""
        in_plane = np.delete(p, self.axis, axis=1)
        return _checker(np.floor(in_plane / self.cell).sum(axis=1), self.colors)


@functools.lru_cache(maxsize=None)
def photo(name: str) -> np.ndarray:
    """One of matplotlib's sample photographs (e.g. ``"grace_hopper.jpg"``) as RGB floats [H, W, 3] in [0, 1]."""
    from matplotlib import cbook

    with Image.open(cbook.get_sample_data(name, asfileobj=False)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64) / 255


@dataclass(frozen=True)
class Dome:
    """Sky dome: a sphere seen from inside, showing ``photo`` above its equator (``repeats`` times around it).

    The photograph is mapped by azimuth (columns) and elevation (rows, the top row at the zenith) and is
    unlit: ``render`` shows its colour as it is.
    """

    center: Vec3
    radius: float
    photo: str
    repeats: int

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Hit distance [N] of rays from inside (origins [N, 3], unit directions [N, 3]); inf on miss."""
        return _sphere_hits(self.center, self.radius, o, d)

    def normal(self, p: np.ndarray) -> np.ndarray:
        """Inward unit normal [N, 3] at surface points [N, 3]."""
        return (np.asarray(self.center) - p) / self.radius

    def albedo(self, p: np.ndarray) -> np.ndarray:
        """The photograph's colour [N, 3] at surface points [N, 3] (its bottom row at and below the equator)."""
        image = photo(self.photo)
        q = (p - np.asarray(self.center)) / self.radius
        azimuth = (np.arctan2(q[:, 1], q[:, 0]) / (2 * np.pi) + 0.5) * self.repeats % 1.0
        elevation = np.arcsin(np.clip(q[:, 2], 0.0, 1.0)) / (np.pi / 2)
        rows = np.minimum(((1 - elevation) * image.shape[0]).astype(np.int64), image.shape[0] - 1)
        columns = np.minimum((azimuth * image.shape[1]).astype(np.int64), image.shape[1] - 1)
        return image[rows, columns]


@dataclass(frozen=True)
class Scene:
    """Primitives, background colour of missed rays and unit direction towards the light."""

    objects: tuple[Sphere | Box | Plane | Dome, ...]
    background: Vec3
    light: Vec3


def _unit(v: np.ndarray) -> np.ndarray:
    """Normalise vectors [..., 3] to unit length."""
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


SCENES: dict[str, Scene] = {
    "object": Scene(
        objects=(
            Sphere((-0.35, 0.05, 0.1), 0.55, ((0.9, 0.35, 0.1), (0.95, 0.9, 0.75)), (12, 6)),
            Sphere((0.45, 0.45, 0.05), 0.3, ((0.15, 0.35, 0.9), (0.15, 0.35, 0.9))),
            Box((0.15, -0.85, -0.6), (0.75, -0.3, 0.0), ((0.2, 0.7, 0.3), (0.1, 0.45, 0.2)), 0.25),
        ),
        background=(1.0, 1.0, 1.0),
        light=tuple(_unit(np.array([0.5, 0.3, 0.8])).tolist()),
    ),
    "forward": Scene(
        objects=(
            Plane(2, -6.0, ((0.85, 0.8, 0.7), (0.3, 0.35, 0.5)), 0.5),
            Sphere((-0.55, -0.25, -2.5), 0.4, ((0.9, 0.2, 0.2), (0.95, 0.85, 0.3)), (1, 8)),
            Box((0.2, 0.0, -3.9), (1.0, 0.8, -3.1), ((0.2, 0.65, 0.35), (0.15, 0.4, 0.25)), 0.2),
            Sphere((0.2, -0.6, -4.6), 0.6, ((0.3, 0.5, 0.95), (0.9, 0.9, 0.95)), (10, 5)),
        ),
        background=(0.6, 0.75, 0.95),
        light=tuple(_unit(np.array([0.4, 0.6, 1.0])).tolist()),
    ),
    "unbounded": Scene(
        objects=(
            Plane(2, 0.0, ((0.45, 0.6, 0.3), (0.35, 0.45, 0.25)), 0.5),
            Sphere((0.0, 0.0, 0.6), 0.6, ((0.9, 0.35, 0.1), (0.95, 0.9, 0.75)), (12, 6)),
            Box((0.6, -0.9, 0.0), (1.1, -0.4, 0.5), ((0.15, 0.35, 0.9), (0.85, 0.85, 0.9)), 0.25),
            *(
                Box((7 * math.cos(a) - 0.5, 7 * math.sin(a) - 0.5, 0.0), (7 * math.cos(a) + 0.5, 7 * math.sin(a) + 0.5, 2.5),
                    ((0.8, 0.75, 0.6), (0.5, 0.3, 0.25)), 0.5)
                for a in np.radians([15.0, 75.0, 135.0, 195.0, 255.0, 315.0])
            ),
            Sphere((20.0, 8.0, 3.0), 3.0, ((0.3, 0.5, 0.95), (0.9, 0.9, 0.95)), (10, 5)),
            Sphere((-18.0, 14.0, 4.0), 4.0, ((0.9, 0.2, 0.2), (0.95, 0.85, 0.3)), (8, 4)),
            Sphere((-6.0, -25.0, 3.5), 3.5, ((0.2, 0.65, 0.35), (0.95, 0.95, 0.85)), (12, 6)),
            Dome((0.0, 0.0, 0.0), 80.0, "grace_hopper.jpg", 4),
        ),
        background=(0.6, 0.75, 0.95),
        light=tuple(_unit(np.array([0.3, -0.5, 0.8])).tolist()),
    ),
}
"""The scenes by name; their geometry is also recorded in ``ground_truth.json``."""


def render(
    scene: SceneName, origins: np.ndarray, directions: np.ndarray, view_dependent: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground truth of rays with origins [N, 3] and (not necessarily unit) directions [N, 3].

    Returns rgb [N, 3] in [0, 1], depth [N] (distance along the unit direction to the nearest
    hit, inf on miss) and hit [N] bool. Missed rays get the scene's background colour.
    """
    spec = SCENES[scene]
    o = np.asarray(origins, dtype=np.float64).reshape(-1, 3)
    d = _unit(np.asarray(directions, dtype=np.float64).reshape(-1, 3))
    ts = np.stack([obj.intersect(o, d) for obj in spec.objects])
    nearest = ts.argmin(axis=0)
    depth = ts[nearest, np.arange(len(o))]
    hit = np.isfinite(depth)
    rgb = np.tile(np.asarray(spec.background), (len(o), 1))
    light = np.asarray(spec.light)
    for k, obj in enumerate(spec.objects):
        m = hit & (nearest == k)
        p = o[m] + depth[m, None] * d[m]
        if isinstance(obj, Dome):
            rgb[m] = obj.albedo(p)
            continue
        n = obj.normal(p)
        n = np.where(np.einsum("ij,ij->i", n, d[m])[:, None] > 0, -n, n)
        diffuse = np.clip(n @ light, 0.0, None)
        color = obj.albedo(p) * (AMBIENT + (1 - AMBIENT) * diffuse)[:, None]
        if view_dependent:
            half = _unit(light - d[m])
            highlight = np.clip(np.einsum("ij,ij->i", n, half), 0.0, None) ** SHININESS
            color = color + SPECULAR * np.where(diffuse > 0, highlight, 0.0)[:, None]
        rgb[m] = np.clip(color, 0.0, 1.0)
    return rgb, depth, hit


@dataclass
class SynthConfig:
    """Write a synthetic dataset with known ground truth (see rvs_nerfstudio.data.synth)."""

    output: Path = Path("data/rvs-synth/object")
    """Folder to write (the layout's images and camera files, and ground_truth.json)."""
    scene: SceneName = "object"
    """Scene: 360° object-centric 'object', LLFF-like forward-facing 'forward', or 360° 'unbounded' (near to far)."""
    layout: Layout = "nerfstudio"
    """Files to write: nerfstudio (transforms.json), llff (poses_bounds.npy) or blender (transforms_{split}.json)."""
    llff_factors: tuple[int, ...] = (2, 4)
    """Downscale factors f of the images_{f}/ folders of the llff layout; each must divide --resolution."""
    resolution: int = 64
    """Width and height of the square images in pixels."""
    num_train: int = 40
    """Number of training views."""
    num_test: int = 8
    """Number of test views (also used as the val split); cameras differ from the training ones."""
    seed: int = 0
    """Seed of the random camera placement."""
    view_dependent: bool = True
    """Add a Blinn-Phong specular term so that colour depends on the viewing direction."""
    overwrite: bool = False
    """Allow writing into a non-empty output folder (existing files of the same name are replaced)."""


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics, named like the keys of nerfstudio's transforms.json."""

    fl_x: float
    fl_y: float
    cx: float
    cy: float
    w: int
    h: int


def look_at(positions: np.ndarray, targets: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Camera-to-world matrices [N, 4, 4] (OpenGL axes) at positions [N, 3] facing targets [N, 3]."""
    forward = _unit(targets - positions)
    right = _unit(np.cross(forward, up))
    c2w = np.tile(np.eye(4), (len(positions), 1, 1))
    c2w[:, :3, 0] = right
    c2w[:, :3, 1] = np.cross(right, forward)
    c2w[:, :3, 2] = -forward
    c2w[:, :3, 3] = positions
    return c2w


def camera_poses(config: SynthConfig) -> tuple[np.ndarray, np.ndarray, Intrinsics]:
    """Seeded camera-to-world poses: train [num_train, 4, 4], test [num_test, 4, 4], intrinsics."""
    rng = np.random.default_rng(config.seed)
    n = config.num_train + config.num_test
    if config.scene == "object":
        azimuth = rng.uniform(0.0, 2 * np.pi, n)
        elevation = rng.uniform(np.radians(15.0), np.radians(65.0), n)
        positions = 4.0 * np.stack(
            [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)], -1
        )
        c2w = look_at(positions, np.zeros((n, 3)), np.array([0.0, 0.0, 1.0]))
    elif config.scene == "unbounded":
        azimuth = rng.uniform(0.0, 2 * np.pi, n)
        radius = rng.uniform(2.6, 3.4, n)
        positions = np.stack([radius * np.cos(azimuth), radius * np.sin(azimuth), rng.uniform(0.7, 1.3, n)], -1)
        targets = np.array([0.0, 0.0, 0.9]) + rng.normal(0.0, 0.3, (n, 3))
        c2w = look_at(positions, targets, np.array([0.0, 0.0, 1.0]))
    else:
        radius = 0.5 * np.sqrt(rng.uniform(0.0, 1.0, n))
        angle = rng.uniform(0.0, 2 * np.pi, n)
        positions = np.stack([radius * np.cos(angle), radius * np.sin(angle), np.zeros(n)], -1)
        targets = np.array([0.0, 0.0, -4.0]) + np.concatenate([rng.normal(0.0, 0.1, (n, 2)), np.zeros((n, 1))], -1)
        c2w = look_at(positions, targets, np.array([0.0, 1.0, 0.0]))
    focal = 0.5 * config.resolution / math.tan(math.radians(FOV_DEG) / 2)
    half = config.resolution / 2
    intrinsics = Intrinsics(focal, focal, half, half, config.resolution, config.resolution)
    return c2w[: config.num_train], c2w[config.num_train :], intrinsics


def pixel_rays(c2w: np.ndarray, intrinsics: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """World-space origins [H*W, 3] and directions [H*W, 3] through the pixel centres, row-major."""
    u, v = np.meshgrid(np.arange(intrinsics.w) + 0.5, np.arange(intrinsics.h) + 0.5)
    x, y = (u - intrinsics.cx) / intrinsics.fl_x, -(v - intrinsics.cy) / intrinsics.fl_y
    directions = np.stack([x, y, -np.ones_like(u)], -1).reshape(-1, 3) @ c2w[:3, :3].T
    return np.broadcast_to(c2w[:3, 3], directions.shape), directions


def _check(config: SynthConfig) -> None:
    """Raise a one-line ``SystemExit`` for invalid options or a non-empty output folder."""
    for name in ("resolution", "num_train", "num_test"):
        value = getattr(config, name)
        if value < 1:
            raise SystemExit(f"rvs-synth: --{name.replace('_', '-')} must be at least 1 (got {value})")
    if config.layout == "llff":
        for factor in config.llff_factors:
            if factor < 2 or config.resolution % factor:
                raise SystemExit(
                    f"rvs-synth: --llff-factors must be at least 2 and divide --resolution {config.resolution} "
                    f"(got {factor})"
                )
    out = config.output
    if out.exists() and not out.is_dir():
        raise SystemExit(f"rvs-synth: {out} exists and is not a folder; pick another --output")
    if out.is_dir() and any(out.iterdir()) and not config.overwrite:
        raise SystemExit(f"rvs-synth: {out} exists and is not empty; pass --overwrite or pick another --output")


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _render_image(config: SynthConfig, c2w: np.ndarray, intrinsics: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """8-bit RGB image [H, W, 3] of one view and the depth [H, W] along the camera axis (inf on miss)."""
    origins, directions = pixel_rays(c2w, intrinsics)
    rgb, depth, _ = render(config.scene, origins, directions, config.view_dependent)
    # Directions through the image plane at unit camera depth: their length converts distance to depth.
    axial = depth / np.linalg.norm(directions, axis=-1)
    shape = (intrinsics.h, intrinsics.w)
    return np.round(rgb * 255).astype(np.uint8).reshape(*shape, 3), axial.reshape(shape)


def _write_nerfstudio(config: SynthConfig, train: np.ndarray, test: np.ndarray, intrinsics: Intrinsics) -> None:
    """``images/{train,test}_NNN.png`` and ``transforms.json`` with the split as file lists."""
    views = [(f"train_{i:03d}", c2w) for i, c2w in enumerate(train)]
    views += [(f"test_{i:03d}", c2w) for i, c2w in enumerate(test)]
    (config.output / "images").mkdir(parents=True, exist_ok=True)
    frames = []
    for name, c2w in track(views, description=f"rendering {config.scene}", transient=True):
        pixels, _ = _render_image(config, c2w, intrinsics)
        file_path = f"images/{name}.png"
        Image.fromarray(pixels, "RGB").save(config.output / file_path)
        frames.append({"file_path": file_path, "transform_matrix": c2w.tolist()})
    split = {
        "train": [f["file_path"] for f in frames[: len(train)]],
        "test": [f["file_path"] for f in frames[len(train) :]],
    }
    _write_json(
        config.output / "transforms.json",
        {
            "camera_model": "OPENCV",
            **asdict(intrinsics),
            "frames": frames,
            "train_filenames": split["train"],
            "val_filenames": split["test"],
            "test_filenames": split["test"],
        },
    )


def opengl_to_llff(c2w: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """LLFF 3x5 matrices [N, 3, 5] of camera-to-world poses [N, 4, 4] with OpenGL axes [right, up, back].

    LLFF's columns are the camera's down, right and back axes, its centre, then (height, width, focal).
    """
    right, up, back, centre = (c2w[:, :3, k] for k in range(4))
    hwf = np.broadcast_to([intrinsics.h, intrinsics.w, intrinsics.fl_x], centre.shape)
    return np.stack([-up, right, back, centre, hwf], axis=-1)


def _write_llff(config: SynthConfig, train: np.ndarray, test: np.ndarray, intrinsics: Intrinsics) -> None:
    """``images/``, ``images_{f}/`` and ``poses_bounds.npy`` of the train views followed by the test views."""
    poses = np.concatenate([train, test])
    folders = {1: "images", **{f: f"images_{f}" for f in config.llff_factors}}
    for folder in folders.values():
        (config.output / folder).mkdir(parents=True, exist_ok=True)
    bounds = []
    for i, c2w in enumerate(track(poses, description=f"rendering {config.scene}", transient=True)):
        for factor, folder in folders.items():
            scaled = Intrinsics(
                *(v / factor for v in (intrinsics.fl_x, intrinsics.fl_y, intrinsics.cx, intrinsics.cy)),
                intrinsics.w // factor,
                intrinsics.h // factor,
            )
            pixels, depth = _render_image(config, c2w, scaled)
            name = f"IMG_{i:04d}.PNG" if factor == 1 else f"{i:03d}.png"
            Image.fromarray(pixels, "RGB").save(config.output / folder / name, format="PNG")
            if factor == 1:
                seen = depth[np.isfinite(depth)]
                bounds.append([seen.min(), seen.max()])
    rows = np.concatenate([opengl_to_llff(poses, intrinsics).reshape(len(poses), 15), np.array(bounds)], axis=1)
    np.save(config.output / "poses_bounds.npy", rows)


def _write_blender(config: SynthConfig, train: np.ndarray, test: np.ndarray, intrinsics: Intrinsics) -> None:
    """``{train,test}/r_N.png`` (RGBA) and ``transforms_{train,val,test}.json``; val lists the test views."""
    camera_angle_x = 2 * math.atan(intrinsics.w / (2 * intrinsics.fl_x))
    for split, poses in (("train", train), ("test", test)):
        (config.output / split).mkdir(parents=True, exist_ok=True)
        frames = []
        for i, c2w in enumerate(track(poses, description=f"rendering {config.scene} {split}", transient=True)):
            pixels, depth = _render_image(config, c2w, intrinsics)
            alpha = np.where(np.isfinite(depth), 255, 0).astype(np.uint8)[..., None]
            Image.fromarray(np.concatenate([pixels * (alpha // 255), alpha], axis=-1), "RGBA").save(
                config.output / split / f"r_{i}.png"
            )
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": c2w.tolist()})
        meta = {"camera_angle_x": camera_angle_x, "frames": frames}
        for name in ("train",) if split == "train" else ("val", "test"):
            _write_json(config.output / f"transforms_{name}.json", meta)


WRITERS = {"nerfstudio": _write_nerfstudio, "llff": _write_llff, "blender": _write_blender}
"""The writer of each layout: ``(config, train poses, test poses, intrinsics)``."""


def generate_scene(config: SynthConfig) -> Path:
    """Render all views into ``config.output`` in ``config.layout`` and write ground_truth.json.

    The output is byte-for-byte identical for identical configs. Returns ``config.output``.
    """
    _check(config)
    train, test, intrinsics = camera_poses(config)
    config.output.mkdir(parents=True, exist_ok=True)
    WRITERS[config.layout](config, train, test, intrinsics)
    scene = SCENES[config.scene]
    _write_json(
        config.output / "ground_truth.json",
        {
            "scene": config.scene,
            "seed": config.seed,
            "view_dependent": config.view_dependent,
            "light_direction": list(scene.light),
            "background": list(scene.background),
            "objects": [{"type": type(obj).__name__.lower(), **asdict(obj)} for obj in scene.objects],
            "train_camera_positions": train[:, :3, 3].tolist(),
            "test_camera_positions": test[:, :3, 3].tolist(),
        },
    )
    return config.output


def entrypoint() -> None:
    """Console script ``rvs-synth``."""
    config = tyro.cli(SynthConfig)
    path = generate_scene(config)
    Console().print(
        f"rvs-synth: wrote {config.num_train} train + {config.num_test} test views "
        f"({config.resolution}x{config.resolution}, scene {config.scene!r}, {config.layout} layout) to {path}",
        markup=False,
        soft_wrap=True,
    )
