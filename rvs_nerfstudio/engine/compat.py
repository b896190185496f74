"""Fixes for nerfstudio 1.1.5 traps that the ``rvs-*`` methods handle for their users.

- Its exponential-decay schedule returns numpy float64 learning rates. They end up in checkpoints,
  which ``torch.load`` refuses under ``weights_only=True`` (the default since torch 2.6), so
  ``ns-eval``, ``ns-render`` and resuming fail. :class:`PortableExponentialDecaySchedulerConfig` keeps
  the same schedule with Python floats, so our checkpoints load anywhere without allow-listing numpy.
- Nerfacto builds LPIPS in its constructor, which downloads AlexNet weights and crashes offline.
  :class:`OptionalLPIPSMixin` reports LPIPS as unavailable (one warning, no number) instead.
- The default ``--machine.device-type cuda`` crashes without a GPU: :func:`default_device_type`.
- On a CPU, subnormal floats make arithmetic many times slower; saturated rays produce them in transmittances
  and gradients: :func:`flush_denormals`.
- On torch 2.9+ it floods the console with warnings about its own indexing and deprecated torch APIs:
  :func:`quiet_library_warnings` hides them in our console scripts and the ``ns-*`` processes they start.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Dict, Iterator, Literal, Tuple, Type

import torch
from torch.optim import Optimizer, lr_scheduler

from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecayScheduler, ExponentialDecaySchedulerConfig

LIBRARY_WARNINGS = (
    "ignore:Using a non-tuple sequence for multidimensional indexing:UserWarning",
    "ignore::FutureWarning",
)
"""``-W`` filters for nerfstudio 1.1.5's noise on torch 2.9+ (its indexing, torch.jit and amp deprecations)."""


def quiet_library_warnings() -> None:
    """Applies :data:`LIBRARY_WARNINGS` here and, through ``PYTHONWARNINGS``, in every child process."""
    for spec in LIBRARY_WARNINGS:
        action, message, category = spec.split(":")
        warnings.filterwarnings(action, message=re.escape(message), category=getattr(builtins, category))
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), *LIBRARY_WARNINGS]))


def flush_denormals() -> bool:
    """Makes this process's CPU arithmetic treat subnormal floats (below 1.2e-38 in float32) as zero.

    Transmittances and gradients of saturated rays land there, where x86 arithmetic is many times slower
    (rvs-nerfacto, 600 steps on 2 cores: 206-231 ms per step without, 163 with); values that small carry no
    information for a NeRF. A process-wide setting, made by every ``rvs-*`` model. Returns False where the CPU
    has no such mode (nothing changes then).
    """
    return torch.set_flush_denormal(True)


def default_device_type() -> Literal["cuda", "cpu"]:
    """``"cuda"`` where a GPU is visible, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class AdamBetasOptimizerConfig(AdamOptimizerConfig):
    """nerfstudio's Adam with its betas settable (nerfstudio 1.1.5 leaves them at torch's (0.9, 0.999))."""

    betas: Tuple[float, float] = (0.9, 0.999)


@dataclass
class PortableExponentialDecaySchedulerConfig(ExponentialDecaySchedulerConfig):
    """nerfstudio's exponential decay with warm-up, with learning rates kept as Python floats."""

    _target: Type = field(default_factory=lambda: PortableExponentialDecayScheduler)


class PortableExponentialDecayScheduler(ExponentialDecayScheduler):
    """The parent's schedule, wrapped so that optimizer and scheduler state hold no numpy scalars."""

    config: PortableExponentialDecaySchedulerConfig

    def get_scheduler(self, optimizer: Optimizer, lr_init: float) -> lr_scheduler.LRScheduler:
        numpy_multiplier = super().get_scheduler(optimizer, lr_init).lr_lambdas[0]
        return lr_scheduler.LambdaLR(optimizer, lr_lambda=lambda step: float(numpy_multiplier(step)))


class UnavailableLPIPS(torch.nn.Module):
    """Stands in for LPIPS when its AlexNet weights cannot be obtained; its score is never reported."""

    def forward(self, *images: torch.Tensor) -> torch.Tensor:
        return torch.tensor(float("nan"))


def _lpips_or_placeholder(lpips_class: Type[torch.nn.Module], **kwargs) -> torch.nn.Module:
    """``lpips_class(**kwargs)``, or :class:`UnavailableLPIPS` with one warning when its weights can't be downloaded."""
    try:
        return lpips_class(**kwargs)
    except OSError as error:  # urllib's URLError and HTTPError are OSErrors
        warnings.warn(
            f"LPIPS is unavailable: its AlexNet weights could not be downloaded ({error}). Metrics omit LPIPS; "
            f"place alexnet-owt-7be5be79.pth in {torch.hub.get_dir()}/checkpoints to enable it.",
            stacklevel=2,
        )
        return UnavailableLPIPS()


@contextlib.contextmanager
def optional_lpips() -> Iterator[None]:
    """Makes ``torchmetrics.image.lpip.LearnedPerceptualImagePatchSimilarity`` fall back to a placeholder."""
    import torchmetrics.image.lpip as lpip_module

    original = lpip_module.LearnedPerceptualImagePatchSimilarity
    lpip_module.LearnedPerceptualImagePatchSimilarity = functools.partial(_lpips_or_placeholder, original)
    try:
        yield
    finally:
        lpip_module.LearnedPerceptualImagePatchSimilarity = original


class OptionalLPIPSMixin:
    """For models deriving from nerfstudio's ``NerfactoModel``: build and evaluate without LPIPS weights offline."""

    lpips: torch.nn.Module

    def populate_modules(self) -> None:
        with optional_lpips():
            super().populate_modules()  # type: ignore[misc]

    def get_image_metrics_and_images(
        self, outputs: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, torch.Tensor]]:
        metrics, images = super().get_image_metrics_and_images(outputs, batch)  # type: ignore[misc]
        if isinstance(self.lpips, UnavailableLPIPS):
            metrics.pop("lpips")
        return metrics, images
