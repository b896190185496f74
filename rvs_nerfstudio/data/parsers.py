"""Data parsers for the paper's data sets: LLFF scenes, and the data format detected from the files.

- :class:`LLFFDataParserConfig` (``llff-data``) reads LLFF scenes (``poses_bounds.npy`` with
  ``images_{f}/``) with the paper's protocol: images downscaled 4 times, every 8th view held out,
  the scene scaled by its depth bounds and, like every nerfstudio scene, rendered without NDC.
- :class:`AutoDataParserConfig` (``auto-data``) picks the parser from the files in ``--data``:
  ``transforms.json`` (nerfstudio), ``transforms_train.json`` (Blender, white background),
  ``poses_bounds.npy`` (LLFF), ``sparse/0`` or ``colmap/sparse/0`` (COLMAP), in this order. Where the
  parser composites RGBA images onto a colour (Blender: white), or where RGB images already show one
  plain colour all around their borders (an object rendered or cut out onto white), its outputs' metadata say so
  under :data:`BACKGROUND_METADATA_KEY`, so that models can render that background without a flag.

Parsers only read the data folder. Problems with the data raise :class:`DataError`, one line that
``ns-*`` commands print without a traceback before exiting with status 1.

Scale of LLFF scenes: the cameras are centred and oriented like nerfstudio's other parsers, then
scaled so that the nearest depth bound lies at ``nearest_bound`` (1 by default: where nerfacto's
scene contraction starts), so the content lies in the contracted space, parameterised by inverse
distance as NDC would do it. Nerfacto keeps its own near and far planes (0.05 and 1000); the scene
box holds every view frustum between its scaled near and far bounds.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Sequence, Type

import numpy as np
import torch
from jaxtyping import Float
from PIL import Image
from torch import Tensor

from nerfstudio.cameras import camera_utils
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
from nerfstudio.data.dataparsers.colmap_dataparser import ColmapDataParserConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.data.utils.dataparsers_utils import get_train_eval_split_interval
from nerfstudio.plugins.registry_dataparser import DataParserSpecification
from nerfstudio.utils.io import load_from_json
from nerfstudio.utils.rich_utils import CONSOLE


BACKGROUND_METADATA_KEY = "background_color"
"""Metadata key of :class:`AutoDataParser`'s outputs: the RGB colour [3] the images were composited on."""

BORDER_IMAGES = 8
"""Images (evenly spaced over the split) whose borders :func:`plain_border_colour` reads."""
BORDER_TOLERANCE = 3
"""Largest difference, in 8-bit levels, of a border pixel from the border's median colour that still counts as plain."""


class DataError(SystemExit):
    """A problem with the user's data in one line; uncaught, Python prints it and exits with status 1."""


def llff_to_opengl(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Camera-to-world poses [N, 4, 4] with OpenGL axes, hwf [N, 3] and bounds [N, 2] of poses_bounds rows [N, 17].

    A row is a 3x5 matrix flattened row-major, then the near and far depth bounds. The matrix's
    columns are the camera's down, right and back axes and its centre in world coordinates, then
    (height, width, focal) of the full-resolution images. OpenGL axes are right, up and back.
    """
    matrices = rows[:, :15].reshape(-1, 3, 5)
    down, right, back, centre = (matrices[:, :, k] for k in range(4))
    c2w = np.tile(np.eye(4), (len(rows), 1, 1))
    c2w[:, :3] = np.stack([right, -down, back, centre], axis=-1)
    return c2w, matrices[:, :, 4], rows[:, 15:]


def frustum_box(cameras: Cameras, near: Float[Tensor, "num_cameras"], far: Float[Tensor, "num_cameras"]) -> SceneBox:
    """Smallest axis-aligned box holding every pinhole camera's view frustum between depths ``near`` and ``far``."""
    corners = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    size = torch.cat([cameras.width, cameras.height], dim=-1)[:, None]  # [N, 1, 2]
    principal = torch.cat([cameras.cx, cameras.cy], dim=-1)[:, None]
    focal = torch.cat([cameras.fx, cameras.fy], dim=-1)[:, None]
    xy = (corners * size - principal) / focal * torch.tensor([1.0, -1.0])  # OpenGL: y up, looking down -z
    rays = torch.cat([xy, -torch.ones_like(xy[..., :1])], dim=-1)  # [N, 4, 3] at unit depth
    directions = rays @ cameras.camera_to_worlds[:, :, :3].transpose(-1, -2)  # [N, 4, 3]
    depths = torch.stack([near, far], dim=-1)[:, :, None, None]  # [N, 2, 1, 1]
    points = depths * directions[:, None] + cameras.camera_to_worlds[:, None, None, :, 3]  # [N, 2, 4, 3]
    points = points.reshape(-1, 3)
    return SceneBox(aabb=torch.stack([points.min(dim=0).values, points.max(dim=0).values]))


def plain_border_colour(image_filenames: Sequence[Path]) -> Optional[Float[Tensor, "3"]]:
    """The colour [3] in [0, 1] that every border pixel of every RGB image has (within :data:`BORDER_TOLERANCE`), or
    None. Images of an object composited onto a plain background have one; photographs of scenes do not.

    Reads :data:`BORDER_IMAGES` images spread over the list; None if any of them is not 8-bit RGB or unreadable
    (the data manager reports unreadable images when it loads them).
    """
    picks = np.unique(np.linspace(0, len(image_filenames) - 1, min(BORDER_IMAGES, len(image_filenames))).round().astype(int))
    borders = []
    for index in picks:
        try:
            with Image.open(image_filenames[index]) as image:
                if image.mode != "RGB":
                    return None
                pixels = np.asarray(image, dtype=np.int16)
        except OSError:
            return None
        borders += [pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]
    if not borders:
        return None
    border = np.concatenate(borders)
    colour = np.median(border, axis=0)
    if np.abs(border - colour).max() > BORDER_TOLERANCE:
        return None
    return torch.tensor(colour / 255.0, dtype=torch.float32)


@dataclass
class LLFFDataParserConfig(DataParserConfig):
    """LLFF scenes (poses_bounds.npy with images_{f}/): every 8th view held out, scaled by the depth bounds."""

    _target: Type = field(default_factory=lambda: LLFFDataParser)
    data: Path = Path("data/nerf_llff_data/trex")
    """Scene folder holding poses_bounds.npy and images_{f}/ (or images/ for a downscale factor of 1)."""
    downscale_factor: int = 4
    """Load images_{f}/ (images/ for 1); file i, in sorted name order, is view i of poses_bounds.npy."""
    llffhold: int = 8
    """Views 0, llffhold, 2*llffhold, ... are held out for val and test; the others are for training."""
    nearest_bound: float = 1.0
    """Scale the scene so that the smallest near depth bound of poses_bounds.npy becomes this distance."""
    orientation_method: Literal["pca", "up", "vertical", "none"] = "up"
    """How nerfstudio orients the poses (see nerfstudio.cameras.camera_utils.auto_orient_and_center_poses)."""
    center_method: Literal["poses", "focus", "none"] = "poses"
    """Where nerfstudio puts the origin: the mean camera centre ('poses'), the cameras' focus, or unchanged."""


class LLFFDataParser(DataParser):
    """Reads an LLFF scene once, checking the poses and every image, then splits it by index."""

    config: LLFFDataParserConfig

    def _fail(self, message: str) -> DataError:
        """The one-line error for ``message``, named after the parser's subcommand."""
        return DataError(f"llff-data: {message}")

    def _read_poses_bounds(self) -> np.ndarray:
        """The rows [N, 17] of poses_bounds.npy, checked for shape, NaNs, positive sizes and 0 < near < far."""
        path = self.config.data / "poses_bounds.npy"
        if not path.is_file():
            raise self._fail(f"{path} not found; an LLFF scene has poses_bounds.npy, a row of 17 numbers per image")
        try:
            rows = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise self._fail(f"cannot read {path} as a numpy array ({error}); the file is damaged or not a .npy file")
        if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[1] != 17 or not np.issubdtype(rows.dtype, np.number):
            raise self._fail(
                f"{path} holds a {rows.dtype} array of shape {rows.shape}; expected N rows of 17 numbers "
                "(a 3x5 pose [rotation | centre | height width focal] and the near and far bounds)"
            )
        rows = rows.astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
        if len(bad):
            raise self._fail(f"{path} has NaN or infinite values in rows {bad.tolist()}; re-estimate those poses")
        _, hwf, bounds = llff_to_opengl(rows)
        bad = np.flatnonzero((hwf <= 0).any(axis=1) | (bounds[:, 0] <= 0) | (bounds[:, 1] <= bounds[:, 0]))
        if len(bad):
            raise self._fail(f"{path} rows {bad.tolist()} need positive height, width, focal and 0 < near < far")
        return rows

    def _image_folder(self) -> Path:
        """images_{f}/ (images/ for f = 1); fails listing the factors present when it is missing."""
        factor = self.config.downscale_factor
        folder = self.config.data / ("images" if factor == 1 else f"images_{factor}")
        if factor < 1 or not folder.is_dir():
            names = {p.name for p in self.config.data.iterdir() if p.is_dir()}
            present = [1] if "images" in names else []
            present += sorted(int(n[7:]) for n in names if n.startswith("images_") and n[7:].isdigit())
            raise self._fail(
                f"no folder {folder.name}/ for downscale factor {factor} in {self.config.data}; "
                f"factors present: {', '.join(map(str, present)) or 'none'}"
            )
        return folder

    def _image_size(self, path: Path) -> tuple[int, int]:
        """Width and height of the image at ``path``, decoded in full so that damaged files fail here."""
        try:
            with Image.open(path) as image:
                image.load()
                return image.size
        except (OSError, SyntaxError, ValueError) as error:
            raise self._fail(f"cannot read image {path} ({error}); replace it with a readable image")

    @functools.cached_property
    def all_views(self) -> DataparserOutputs:
        """Every view of the scene, in poses_bounds.npy order, in nerfstudio's conventions."""
        if self.config.llffhold < 2:
            raise self._fail(f"llffhold must be at least 2 (got {self.config.llffhold})")
        if self.config.nearest_bound <= 0:
            raise self._fail(f"nearest_bound must be positive (got {self.config.nearest_bound})")
        if not self.config.data.is_dir():
            raise self._fail(f"{self.config.data} is not a folder")
        rows = self._read_poses_bounds()
        folder = self._image_folder()
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        if len(files) != len(rows):
            raise self._fail(
                f"{folder} has {len(files)} files but poses_bounds.npy has {len(rows)} poses; "
                "each pose needs one image (they pair in sorted file name order)"
            )
        c2w, hwf, bounds = llff_to_opengl(rows)
        sizes = np.array([self._image_size(path) for path in files], dtype=np.float64)  # [N, 2]: width, height
        full = hwf[:, [1, 0]]
        for path, size, expected in zip(files, sizes, full / self.config.downscale_factor):
            if (np.abs(size - expected) >= 1).any():
                raise self._fail(
                    f"{path} is {size[0]:.0f}x{size[1]:.0f} pixels, but poses_bounds.npy and downscale factor "
                    f"{self.config.downscale_factor} give {expected[0]:g}x{expected[1]:g}; check the downscale factor"
                )

        poses, transform = camera_utils.auto_orient_and_center_poses(
            torch.from_numpy(c2w).float(), self.config.orientation_method, self.config.center_method
        )
        scale = self.config.nearest_bound / float(bounds[:, 0].min())
        poses[:, :3, 3] *= scale
        ratio = torch.from_numpy(sizes / full).float()  # the actual resampling of each image
        focal = torch.from_numpy(hwf[:, 2:]).float()
        size = torch.from_numpy(sizes).float()
        cameras = Cameras(
            camera_to_worlds=poses,
            fx=focal * ratio[:, :1],
            fy=focal * ratio[:, 1:],
            cx=size[:, :1] / 2,
            cy=size[:, 1:] / 2,
            width=size[:, :1].int(),
            height=size[:, 1:].int(),
            camera_type=CameraType.PERSPECTIVE,
        )
        scaled_bounds = torch.from_numpy(bounds * scale).float()
        return DataparserOutputs(
            image_filenames=files,
            cameras=cameras,
            scene_box=frustum_box(cameras, scaled_bounds[:, 0], scaled_bounds[:, 1]),
            dataparser_transform=transform,
            dataparser_scale=scale,
        )

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        views = self.all_views
        train, held_out = get_train_eval_split_interval(views.image_filenames, self.config.llffhold)
        indices = {"train": train, "val": held_out, "test": held_out}[split]
        return dataclasses.replace(
            views,
            image_filenames=[views.image_filenames[i] for i in indices],
            cameras=views.cameras[torch.from_numpy(indices)],
        )


@dataclass
class AutoDataParserConfig(DataParserConfig):
    """The parser that the files in data call for: nerfstudio, Blender, LLFF or COLMAP."""

    data: Path = Path()
    """Scene folder; the first found of transforms.json, transforms_train.json, poses_bounds.npy, (colmap/)sparse/0."""
    nerfstudio: NerfstudioDataParserConfig = field(default_factory=NerfstudioDataParserConfig)
    """Options for a folder with transforms.json (its data is always the data above)."""
    blender: BlenderDataParserConfig = field(default_factory=BlenderDataParserConfig)
    """Options for a folder with transforms_train.json: white background as in the paper (data is the one above)."""
    blender_fit_cameras: bool = True
    """Scale a Blender scene so that its training cameras fit in [-1, 1]^3, as nerfstudio-data does; its scale-factor
    is then replaced. Without it, results depend on the world scale the scene was made in (README, Decisions)."""
    llff: LLFFDataParserConfig = field(default_factory=LLFFDataParserConfig)
    """Options for a folder with poses_bounds.npy (its data is always the data above)."""
    colmap: ColmapDataParserConfig = field(default_factory=ColmapDataParserConfig)
    """Options for a folder with sparse/0 or colmap/sparse/0 (its data and colmap_path follow the folder)."""

    def detect(self) -> DataParserConfig:
        """The config of the first format found in ``data``, pointed at ``data``; a one-line DataError if none is."""
        if not self.data.is_dir():
            raise DataError(f"auto-data: {self.data} is not a folder; pass the scene folder with --data")
        candidates = [
            ("transforms.json", self.nerfstudio),
            ("transforms_train.json", self.blender),
            ("poses_bounds.npy", self.llff),
        ]
        for name, config in candidates:
            if (self.data / name).is_file():
                if config is self.blender and self.blender_fit_cameras:
                    return dataclasses.replace(config, data=self.data, scale_factor=self.blender_camera_fit())
                return dataclasses.replace(config, data=self.data)
        for colmap_path in (Path("sparse/0"), Path("colmap/sparse/0")):
            if (self.data / colmap_path).is_dir():
                return dataclasses.replace(self.colmap, data=self.data, colmap_path=colmap_path)
        raise DataError(
            f"auto-data: {self.data} has none of transforms.json (nerfstudio), transforms_train.json (blender), "
            "poses_bounds.npy (llff), sparse/0 or colmap/sparse/0 (colmap); name the format with a dataparser "
            "subcommand, e.g. nerfstudio-data"
        )

    def blender_camera_fit(self) -> float:
        """The scale that brings the largest camera-centre coordinate of transforms_train.json to 1."""
        path = self.data / "transforms_train.json"
        try:
            centres = np.array([frame["transform_matrix"] for frame in load_from_json(path)["frames"]])[:, :3, 3]
        except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
            raise DataError(f"auto-data: cannot read the camera poses of {path} ({error!r}); fix or regenerate the file")
        extent = np.abs(centres).max() if centres.size else 0.0
        if not np.isfinite(centres).all() or extent == 0:
            raise DataError(f"auto-data: the cameras of {path} are not finite or all at the origin; fix their poses")
        return float(1.0 / extent)

    def setup(self, **kwargs) -> "AutoDataParser":
        """The detected format's parser, wrapped so that its outputs name the background colour of the data."""
        return AutoDataParser(self, self.detect().setup(**kwargs))


class AutoDataParser(DataParser):
    """The detected format's ``parser``; outputs whose images are composited onto ``alpha_color``, or whose RGB images
    all have one plain border colour (:func:`plain_border_colour`), carry that colour in their metadata
    (:data:`BACKGROUND_METADATA_KEY`), which nerfstudio hands to the model."""

    def __init__(self, config: AutoDataParserConfig, parser: DataParser) -> None:
        super().__init__(config)
        self.parser = parser
        self.includes_time = parser.includes_time

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        outputs = self.parser.get_dataparser_outputs(split, **kwargs)
        background = outputs.alpha_color
        if background is None:
            background = plain_border_colour(outputs.image_filenames)
            if background is not None and split == "train":
                CONSOLE.log(
                    f"auto-data: the training images share the plain border colour {[round(c, 3) for c in background.tolist()]}: "
                    "taken as the background they were composited on (rvs-mc's background-color and ray-bounds auto use it)"
                )
        if background is None:
            return outputs
        return dataclasses.replace(outputs, metadata={**outputs.metadata, BACKGROUND_METADATA_KEY: background})


llff_data = DataParserSpecification(
    config=LLFFDataParserConfig(),
    description="LLFF scenes (poses_bounds.npy, images_4/), split and scaled as in the RVS paper.",
)

auto_data = DataParserSpecification(
    config=AutoDataParserConfig(),
    description="Detects nerfstudio, Blender (white background), LLFF or COLMAP scenes from their files.",
)
