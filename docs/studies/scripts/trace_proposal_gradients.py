"""Per-step trace of one `rvs-bench quality --preset cpu-long` run: the loss and each parameter group's gradient norm.

Study script behind the README's "Why rvs-nerfacto collapses" (not part of the package). It trains as
`rvs-bench quality --preset cpu-long --methods METHOD --scenes SCENE --seeds SEED --threads 1` does and writes to
OUTPUT/steps.jsonl one JSON line per step (loss; gradient norm per group before any clipping) and one per evaluation
(every 300 steps: held-out PSNR and `rvs_nerfstudio/tools/bench/placement.py`'s sample placement). With
--spike-above X it also saves the weights and optimizer states from before every step whose proposal gradient norm
is above X (OUTPUT/before-step-N.pt). --replay-step N then repeats that one step from its saved state (the trainer
seeds each step, so the rays and jitter are the same) and prints its record, with the share of each resampling's edges
whose gradient the gradient floor scaled ("floored_share": proposal level 2, then the radiance field's samples);
--cut positions / widths detaches the
radiance field's sample distances / bin widths, to see which path carries the proposals' gradient. METHOD may
differ from the traced run's, e.g. with another gradient_floor.

    python docs/studies/scripts/trace_proposal_gradients.py rvs-nerfacto unbounded 1 /tmp/trace --spike-above 0.1
    python docs/studies/scripts/trace_proposal_gradients.py rvs-nerfacto unbounded 1 /tmp/trace --replay-step 1275 --cut positions
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
from pathlib import Path
from unittest import mock

import torch

from rvs_nerfstudio.core import spline
from rvs_nerfstudio.tools import runner
from rvs_nerfstudio.tools.bench import common, placement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method", help="as rvs-bench's --methods, e.g. rvs-nerfacto:density_padding=1")
    parser.add_argument("scene", choices=["object", "forward", "unbounded"])
    parser.add_argument("seed", type=int)
    parser.add_argument("output", type=Path)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--spike-above", type=float, default=None)
    parser.add_argument("--replay-step", type=int, default=None)
    parser.add_argument("--cut", choices=["none", "positions", "widths"], default="none")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    preset = common.BENCH_PRESETS["cpu-long"]
    (spec,) = common.parse_methods([args.method])
    config = common.parse_as_users_do(common.method_configs([spec], preset)[spec.label], "nerfstudio")
    trainer = runner.setup_trainer(config, common.make_scene(args.output, args.scene, preset), None, args.output / "run", args.seed)
    optimizers = trainer.optimizers
    norms = {}
    clip = torch.nn.utils.clip_grad_norm_

    def measured_clip(parameters, max_norm, *rest, **options):  # nerfstudio clips a group with its parameter list
        norms[id(parameters)] = float(clip(parameters, max_norm, *rest, **options))

    def traced_step(step: int) -> dict:
        norms.clear()
        record = {"step": step, "loss": runner.train_step(trainer, step).item()}
        for group, parameters in optimizers.parameters.items():  # clipped groups: the norm before clipping
            grads = [p.grad for p in parameters if p.grad is not None]
            record[group] = norms[id(parameters)] if id(parameters) in norms else float(torch.nn.utils.get_total_norm(grads))
        return record

    with mock.patch.object(torch.nn.utils, "clip_grad_norm_", measured_clip):
        if args.replay_step is not None:
            replay(trainer, args.output / f"before-step-{args.replay_step}.pt", args.cut)
            floored_shares = []
            scale_gradient = spline._ScaleGradient.apply

            def counted(x, scale):
                floored_shares.append(round(float((scale < 1).float().mean()), 4))
                return scale_gradient(x, scale)

            with mock.patch.object(spline._ScaleGradient, "apply", counted):
                record = traced_step(args.replay_step)
            print(json.dumps({**record, "floored_share": floored_shares, "cut": args.cut, "method": args.method}))
            return
        with open(args.output / "steps.jsonl", "w") as log:
            for step in range(args.steps + 1):
                if step % 300 == 0:
                    record = {"eval": step, "psnr": runner.evaluate(trainer)["psnr"], **placement.held_out_placement(trainer)}
                    print(json.dumps(record), flush=True)
                    log.write(json.dumps(record) + "\n")
                if step == args.steps:
                    break
                before = copy.deepcopy(
                    {"model": trainer.pipeline.model.state_dict(), "optimizers": {k: o.state_dict() for k, o in optimizers.optimizers.items()}}
                ) if args.spike_above is not None else None
                record = traced_step(step)
                log.write(json.dumps(record) + "\n")
                if before is not None and record["proposal_networks"] > args.spike_above:
                    torch.save(before, args.output / f"before-step-{step}.pt")


def replay(trainer, state_path: Path, cut: str) -> None:
    """Loads a saved state into ``trainer``; ``cut`` detaches the radiance samples' distances or widths."""
    state = torch.load(state_path, weights_only=False)
    model = trainer.pipeline.model
    model.load_state_dict(state["model"])
    for group, optimizer in trainer.optimizers.optimizers.items():
        optimizer.load_state_dict(state["optimizers"][group])
    place = model.proposal_sampler.radiance_samples

    def placed_with_cut(*args, **kwargs):
        samples = place(*args, **kwargs)
        if cut == "positions":
            frustums = samples.frustums
            frustums = dataclasses.replace(frustums, starts=frustums.starts.detach(), ends=frustums.ends.detach())
            return dataclasses.replace(samples, frustums=frustums)
        return dataclasses.replace(samples, deltas=samples.deltas.detach()) if cut == "widths" else samples

    model.proposal_sampler.radiance_samples = placed_with_cut


if __name__ == "__main__":
    main()
