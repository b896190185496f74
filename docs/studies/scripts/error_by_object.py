"""Held-out PSNR of one `rvs-bench quality --preset cpu-long` run on the unbounded scene, per object the pixels show.

Study script behind the README's "Which pixels rvs-nerfacto loses on the unbounded scene" (not part of the package).
It trains as `rvs-bench quality --preset cpu-long --methods METHOD --scenes unbounded --seeds SEED --threads 1` does
(without the intermediate evaluations), renders the held-out views and splits their squared error by the object the
pixel's ground-truth ray hits first (`rvs_nerfstudio.data.synth`): the ground plane, the sphere and box at the centre,
the ring of pillars, the three far spheres, the sky dome. It prints one JSON line: per group its share of the pixels,
its PSNR (from the group's mean squared error over all held-out pixels) and the 10th, 50th and 90th percentile of
the rendered median depth over the true distance (1: right; both in the model's units); and the PSNR on the first 8
training views (--training-views). --renders PATH also saves each view's
target, rendered colour, median depth and accumulation (`.npz`, keys `target0`, `rgb0`, `depth0`, `accumulation0`, ...).

    python docs/studies/scripts/error_by_object.py rvs-nerfacto 1 /tmp/error-by-object --steps 1200
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from rvs_nerfstudio.data import synth
from rvs_nerfstudio.tools import runner
from rvs_nerfstudio.tools.bench import common


def object_groups(origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Group name [N] of the first object each ray hits in the unbounded scene (the sky dome encloses it all)."""
    objects = synth.SCENES["unbounded"].objects
    units = directions / np.linalg.norm(directions, axis=-1, keepdims=True)
    first = np.stack([obj.intersect(origins, units) for obj in objects]).argmin(axis=0)
    names = []
    for obj in objects:
        if isinstance(obj, synth.Plane):
            names.append("ground")
        elif isinstance(obj, synth.Dome):
            names.append("sky")
        else:
            centre = np.asarray(obj.center if isinstance(obj, synth.Sphere) else np.add(obj.lo, obj.hi) / 2)
            distance = np.linalg.norm(centre[:2])
            names.append("centre" if distance < 3 else "pillars" if distance < 10 else "far spheres")
    return np.asarray(names)[first]


def training_views_psnr(trainer, count: int) -> float:
    """PSNR over the first ``count`` training views (their mean squared error), rendered as held-out views are."""
    model, dataset = trainer.pipeline.model, trainer.pipeline.datamanager.train_dataset
    squared = []
    model.eval()
    with torch.no_grad():
        for index in range(min(count, len(dataset))):
            camera = dataset.cameras[index : index + 1].to(model.device)
            rgb = model.get_outputs_for_camera(camera)["rgb"]
            squared.append(((rgb - dataset[index]["image"][..., :3].to(rgb)) ** 2).mean().item())
    model.train()
    return float(-10 * np.log10(np.mean(squared)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method", help="as rvs-bench's --methods, e.g. rvs-nerfacto:density_padding=1")
    parser.add_argument("seed", type=int)
    parser.add_argument("output", type=Path, help="folder for the generated scene and the run")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--renders", type=Path, default=None)
    parser.add_argument("--training-views", type=int, default=8, help="training views whose PSNR is also printed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    preset = common.BENCH_PRESETS["cpu-long"]
    (spec,) = common.parse_methods([args.method])
    config = common.parse_as_users_do(common.method_configs([spec], preset)[spec.label], "nerfstudio")
    data = common.make_scene(args.output, "unbounded", preset)
    _, test_poses, intrinsics = synth.camera_poses(
        synth.SynthConfig(output=data, scene="unbounded", resolution=preset.resolution, num_train=preset.num_train,
                          num_test=preset.num_test, seed=0)
    )

    def errors_by_group(trainer) -> Dict[str, float]:
        model, datamanager = trainer.pipeline.model, trainer.pipeline.datamanager
        filenames = datamanager.eval_dataset.image_filenames
        squared: Dict[str, List[np.ndarray]] = {}
        renders: Dict[str, np.ndarray] = {}
        depth_ratios: Dict[str, List[np.ndarray]] = {}
        scale = float(datamanager.train_dataparser_outputs.dataparser_scale)  # world units → the model's
        model.eval()
        with torch.no_grad():
            for camera, batch in datamanager.fixed_indices_eval_dataloader:
                view = int(Path(filenames[batch["image_idx"]]).stem.split("_")[-1])  # test_003.png: test camera 3
                outputs = model.get_outputs_for_camera(camera)
                target, rgb = batch["image"][..., :3].numpy(), outputs["rgb"].numpy()
                origins, directions = synth.pixel_rays(test_poses[view], intrinsics)
                groups = object_groups(origins, directions)
                error = ((rgb - target) ** 2).mean(axis=-1).ravel()
                _, true_distance, _ = synth.render("unbounded", origins, directions)
                depth = outputs["depth"].numpy().ravel() / (true_distance * scale)
                for group in (*np.unique(groups), "all"):
                    squared.setdefault(group, []).append(error if group == "all" else error[groups == group])
                    depth_ratios.setdefault(group, []).append(depth if group == "all" else depth[groups == group])
                renders.update({f"target{view}": target, f"rgb{view}": rgb, f"depth{view}": outputs["depth"].numpy(),
                                f"accumulation{view}": outputs["accumulation"].numpy()})
        model.train()
        if args.renders is not None:
            np.savez_compressed(args.renders, **renders)
        total = sum(e.size for e in squared["all"])
        result = {}
        for group, parts in squared.items():
            values = np.concatenate(parts)
            result[f"{group} share"] = values.size / total
            result[f"{group} psnr"] = float(-10 * np.log10(values.mean()))
            ratios = np.concatenate(depth_ratios[group])
            result[f"{group} depth/true q10,50,90"] = np.quantile(ratios, [0.1, 0.5, 0.9]).round(3).tolist()
        result["training views psnr"] = training_views_psnr(trainer, args.training_views)
        return result

    result = runner.train(config, data, args.steps, preset=None, seed=args.seed, output_dir=args.output / "run",
                          probe=errors_by_group)
    print(json.dumps({"method": args.method, "seed": args.seed, "steps": args.steps,
                      "psnr": result.evals[-1].metrics["psnr"], **result.probes}))


if __name__ == "__main__":
    main()
