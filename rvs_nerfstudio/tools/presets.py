"""Named settings for the ``rvs-*`` methods, usable as ``ns-train`` flags or applied to a config in process.

``cpu-small`` keeps nerfacto's architecture but shrinks batch, sample counts and hash grids so that a
few hundred steps on a 64-pixel synthetic scene take minutes on two CPU cores. Method defaults stay
nerfacto's full settings; presets never change them.
"""

from __future__ import annotations

from typing import Any, Dict, List

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


def cli_args(preset: str) -> List[str]:
    """The preset as ``ns-train`` flags, e.g. ``--pipeline.model.num-levels 8``."""
    args = []
    for path, value in PRESETS[preset].items():
        args.append("--" + path.replace("_", "-"))
        args.extend(str(v) for v in (value if isinstance(value, tuple) else (value,)))
    return args


def apply(config: TrainerConfig, preset: str) -> TrainerConfig:
    """Sets the preset's values on ``config`` in place and returns it."""
    for path, value in PRESETS[preset].items():
        *parents, name = path.split(".")
        target = config
        for parent in parents:
            target = getattr(target, parent)
        if not hasattr(target, name):
            raise AttributeError(f"preset {preset!r}: {type(target).__name__} has no field {name!r}")
        setattr(target, name, value)
    return config
