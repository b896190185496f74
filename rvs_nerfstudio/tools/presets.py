"""Named settings for the ``rvs-*`` methods, usable as ``ns-train`` flags or applied to a config in process.

``cpu-small`` keeps nerfacto's architecture but shrinks batch, sample counts and hash grids so that a
few hundred steps on a 64-pixel synthetic scene take minutes on two CPU cores. Method defaults stay
the full settings; presets never change them. A method whose defaults differ from nerfacto's where a preset
sets a value gets that value scaled as its default is (:data:`METHOD_PRESETS`).
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from nerfstudio.engine.trainer import TrainerConfig

PRESETS: Dict[str, Dict[str, Any]] = {
    "cpu-small": {
        "pipeline.datamanager.train_num_rays_per_batch": 512,
        "pipeline.datamanager.eval_num_rays_per_batch": 512,
        "pipeline.model.eval_num_rays_per_chunk": 4096,
        "pipeline.model.num_proposal_samples_per_ray": (64, 32),
        "pipeline.model.num_nerf_samples_per_ray": 24,
        "pipeline.model.num_levels": 8,
        "pipeline.model.log2_hashmap_size": 15,
        "pipeline.model.max_res": 256,
    },
    "full": {},
}
"""Preset name → dotted config path → value."""

METHOD_PRESETS: Dict[Tuple[str, str], Dict[str, Any]] = {
    # rvs-mc's first density level has half the points of nerfacto's first proposal level, its last the same (128 + 96
    # against 256 + 96; README, "Decisions worth knowing"): 32 + 32 against cpu-small's 64 + 32. It has no nerf samples.
    ("cpu-small", "rvs-mc"): {
        "pipeline.model.num_proposal_samples_per_ray": (32, 32),
        "pipeline.model.num_nerf_samples_per_ray": None,
    },
}
"""(preset, method name) → dotted config path → the value for that method instead (None: leave the method's own)."""


def settings(preset: str, method_name: str) -> Dict[str, Any]:
    """The preset's dotted config paths and values for the method called ``method_name``."""
    merged = {**PRESETS[preset], **METHOD_PRESETS.get((preset, method_name), {})}
    return {path: value for path, value in merged.items() if value is not None}


def cli_args(preset: str, method_name: str) -> List[str]:
    """The preset as ``ns-train METHOD_NAME`` flags, e.g. ``--pipeline.model.num-levels 8``."""
    args = []
    for path, value in settings(preset, method_name).items():
        args.append("--" + path.replace("_", "-"))
        args.extend(str(v) for v in (value if isinstance(value, tuple) else (value,)))
    return args


def holder_of(config: Any, path: str) -> Tuple[Any, str]:
    """The object that holds the dotted ``path`` of ``config`` (through attributes and dict keys, as in
    ``optimizers.fields.optimizer.lr``) and the path's last name; the object is None where a part is missing."""
    *parents, name = path.split(".")
    target = config
    for parent in parents:
        target = target.get(parent) if isinstance(target, dict) else getattr(target, parent, None)
    return target, name


def apply(config: TrainerConfig, preset: str) -> TrainerConfig:
    """Sets the preset's values for ``config.method_name`` on ``config`` in place and returns it."""
    for path, value in settings(preset, config.method_name).items():
        target, name = holder_of(config, path)
        if not hasattr(target, name):
            raise AttributeError(f"preset {preset!r}: {type(target).__name__} has no field {name!r}")
        setattr(target, name, value)
    return config
