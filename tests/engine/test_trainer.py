"""Crash safety of ``rvs-*`` training: a non-finite loss stops the run, checkpoints are written atomically."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import pytest
import torch

from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.trainer import Trainer
from nerfstudio.utils.eval_utils import eval_load_checkpoint
from rvs_nerfstudio.engine import trainer as safe_trainer
from rvs_nerfstudio.engine.trainer import SafeTrainer, TrainingStopped
from rvs_nerfstudio.method_configs import rvs_mc, rvs_nerfacto
from rvs_nerfstudio.tools.runner import setup_trainer, stop_data_workers


def small_trainer(method, scene: Path, tmp_path: Path) -> Iterator[Trainer]:
    trainer = setup_trainer(method.config, scene, "cpu-small", tmp_path, seed=0)
    trainer.config.pipeline.datamanager.train_num_rays_per_batch = 64
    yield trainer
    stop_data_workers(trainer)


METHODS = pytest.fixture(params=[rvs_nerfacto, rvs_mc], ids=["rvs-nerfacto", "rvs-mc"])


@METHODS
def trainer(request, small_scene, tmp_path):
    yield from small_trainer(request.param, small_scene, tmp_path)


@METHODS
def forward_trainer(request, small_forward_scene, tmp_path):
    yield from small_trainer(request.param, small_forward_scene, tmp_path)


def checkpoints(trainer: Trainer) -> List[Path]:
    return sorted(trainer.checkpoint_dir.glob("*.ckpt"))


def loaded_step(trainer: Trainer) -> int:
    """Loads the run's latest checkpoint the way ns-eval does (weights_only) and returns its step."""
    config = copy.copy(trainer.config)
    config.load_dir = trainer.checkpoint_dir
    return eval_load_checkpoint(config, trainer.pipeline)[1]


def test_methods_use_the_safe_trainer(trainer):
    assert type(trainer) is SafeTrainer


def test_proposal_optimizer_is_torchs_fused_adam_and_the_others_nerfactos_loop(trainer):
    """RVS steps the proposal networks' optimizer on every training step, nerfacto on few: that one runs fused."""
    optimizers = trainer.optimizers.optimizers
    assert optimizers["proposal_networks"].defaults["fused"] is True
    assert not optimizers["fields"].defaults["fused"] and not optimizers["camera_opt"].defaults["fused"]


def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(trainer, monkeypatch):
    model = trainer.pipeline.model
    get_outputs = model.get_outputs

    def nan_from_step_7(ray_bundle):
        outputs = get_outputs(ray_bundle)
        if model.loss_guard.step >= 7:
            outputs["rgb"] = outputs["rgb"] * float("nan")
        return outputs

    monkeypatch.setattr(model, "get_outputs", nan_from_step_7)
    trainer.config.max_num_iterations, trainer.config.steps_per_save = 20, 3
    with pytest.raises(TrainingStopped) as stopped:
        trainer.train()
    message = str(stopped.value)
    print(message)
    assert "\n" not in message and isinstance(stopped.value, SystemExit)
    assert message.startswith("Training stopped at step 7: rgb_loss is not finite (the last finite loss was ")
    assert " at step 6)" in message
    assert [path.name for path in checkpoints(trainer)] == ["step-000000006.ckpt"]
    state = torch.load(checkpoints(trainer)[0], map_location="cpu", weights_only=True)
    assert all(value.isfinite().all() for value in state["pipeline"].values() if value.is_floating_point())
    assert all(p.isfinite().all() for p in model.parameters()), "the NaN loss reached the weights"
    assert loaded_step(trainer) == 6


def test_non_finite_gradient_stops_training_and_keeps_the_last_good_checkpoint(trainer):
    model = trainer.pipeline.model
    weight = next(model.field.parameters())
    weight.register_hook(lambda grad: grad * float("nan") if trainer.optimizers.step >= 7 else grad)
    trainer.config.max_num_iterations, trainer.config.steps_per_save = 20, 3
    with pytest.raises(TrainingStopped) as stopped:
        trainer.train()
    message = str(stopped.value)
    assert "\n" not in message and isinstance(stopped.value, SystemExit)
    assert message.startswith("Training stopped at step 7: the gradient of fields is not finite.")
    assert [path.name for path in checkpoints(trainer)] == ["step-000000006.ckpt"]
    assert all(p.isfinite().all() for p in model.parameters()), "the NaN gradient reached the weights"
    assert loaded_step(trainer) == 6


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_one_non_finite_gradient_value_anywhere_stops_the_step(bad):
    """One bad value in the middle of one gradient tensor of one group is found and named; finite ones pass."""
    parameters = {
        "fields": [torch.nn.Parameter(torch.zeros(1000, 2)), torch.nn.Parameter(torch.zeros(0))],
        "proposal_networks": [torch.nn.Parameter(torch.zeros(5))],
    }
    config = {group: {"optimizer": AdamOptimizerConfig(lr=1e-3), "scheduler": None} for group in parameters}
    optimizers = safe_trainer.FiniteGradientOptimizers(config, parameters)
    optimizers.step = 3
    for group in parameters.values():
        for parameter in group:
            parameter.grad = torch.full_like(parameter, -3e38)
    optimizers.check_gradients(list(parameters))
    parameters["fields"][0].grad[517, 1] = bad
    with pytest.raises(TrainingStopped, match=r"^Training stopped at step 3: the gradient of fields is not finite\."):
        optimizers.check_gradients(list(parameters))
    optimizers.check_gradients(["proposal_networks"])


def test_mixed_precision_trains_on_the_cpu(forward_trainer):
    """Nerfstudio's mixed-precision step (autocast, then a gradient scaler) on the CPU with bfloat16: the field
    really runs in bfloat16, no step is skipped, every gradient is finite and the loss falls (on the forward scene:
    rendered on its white, the object scene's first loss is already low)."""
    trainer = forward_trainer
    trainer.mixed_precision = True
    trainer.grad_scaler = torch.amp.GradScaler("cpu")
    dtypes = set()
    linear = next(m for m in trainer.pipeline.model.field.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda module, inputs, output: dtypes.add(output.dtype))
    scale = trainer.grad_scaler.get_scale()
    losses = []
    for step in range(40):
        losses.append(float(trainer.train_iteration(step)[0]))
        assert trainer.grad_scaler.get_scale() >= scale, f"step {step} was skipped by the gradient scaler"
        scale = trainer.grad_scaler.get_scale()
        params = trainer.pipeline.model.parameters()
        assert all(p.grad.isfinite().all() for p in params if p.grad is not None), f"step {step}: non-finite gradient"
    assert dtypes == {torch.bfloat16}
    assert sum(losses[-10:]) / 10 < 0.75 * losses[0], losses


def test_non_finite_weights_are_never_saved(trainer):
    trainer.save_checkpoint(3)
    with torch.no_grad():
        next(trainer.pipeline.model.field.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingStopped, match="Not saving step 6: 1 weight tensors are not finite"):
        trainer.save_checkpoint(6)
    assert [path.name for path in checkpoints(trainer)] == ["step-000000003.ckpt"]


real_save = torch.save
"""torch.save itself, kept before any test patches it."""


def write_half_then_die(obj, path):
    """Stands in for ``torch.save`` killed halfway: half of the real bytes reach the file, then the process ends."""
    real_save(obj, path)
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])
    raise KeyboardInterrupt



def test_checkpoint_killed_mid_write_leaves_the_previous_one_loadable(trainer, monkeypatch):
    trainer.save_checkpoint(3)
    monkeypatch.setattr(safe_trainer.torch, "save", write_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint(6)
    assert [path.name for path in checkpoints(trainer)] == ["step-000000003.ckpt"]
    assert loaded_step(trainer) == 3
    monkeypatch.undo()
    trainer.save_checkpoint(9)  # the next save replaces the partial file and the old checkpoint
    assert [path.name for path in checkpoints(trainer)] == ["step-000000009.ckpt"]
    assert not any((trainer.base_dir / safe_trainer.PARTIAL_CHECKPOINTS).iterdir()), "a partial write was left"


def test_stock_trainer_leaves_a_truncated_newest_checkpoint(trainer, monkeypatch):
    """The nerfstudio 1.1.5 trap that SafeTrainer removes: its newest checkpoint is the broken one."""
    Trainer.save_checkpoint(trainer, 3)
    monkeypatch.setattr(torch, "save", write_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        Trainer.save_checkpoint(trainer, 6)
    monkeypatch.undo()
    assert [path.name for path in checkpoints(trainer)][-1] == "step-000000006.ckpt"
    with pytest.raises(Exception):
        loaded_step(trainer)


def test_resumed_run_repeats_the_uninterrupted_losses(small_scene, tmp_path, monkeypatch):
    """Steps 5-7 of a run resumed from its step-4 checkpoint have the losses of the uninterrupted run's steps 5-7."""

    def run(steps: int, output: Path, load_dir: Optional[Path] = None) -> Tuple[List[float], Path]:
        config = copy.deepcopy(rvs_nerfacto.config)
        config.max_num_iterations, config.steps_per_save, config.load_dir = steps, 4, load_dir
        trainer = setup_trainer(config, small_scene, "cpu-small", output, seed=0)
        losses: List[float] = []
        train_iteration = trainer.train_iteration

        def recorded(step: int):
            outputs = train_iteration(step)
            losses.append(float(outputs[0]))
            return outputs

        monkeypatch.setattr(trainer, "train_iteration", recorded)
        try:
            trainer.train()
        finally:
            stop_data_workers(trainer)
        return losses, trainer.checkpoint_dir

    uninterrupted, _ = run(8, tmp_path / "a")
    first_part, checkpoints_dir = run(5, tmp_path / "b")
    resumed, _ = run(3, tmp_path / "c", load_dir=checkpoints_dir)
    print("uninterrupted", uninterrupted, "\nfirst part + resumed", first_part + resumed)
    assert [path.name for path in checkpoints_dir.glob("*.ckpt")] == ["step-000000004.ckpt"]
    assert first_part == pytest.approx(uninterrupted[:5], rel=1e-6)
    assert resumed == pytest.approx(uninterrupted[5:], rel=1e-5)
    assert len(set(uninterrupted)) == len(uninterrupted)  # the losses do change from step to step
