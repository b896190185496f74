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
- Its torch hash grid (the fallback without tiny-cuda-nn, so every CPU run) looks its table up with advanced
  indexing, whose backward accumulates with ``index_put_``, slower on a CPU than ``index_add_``.
  RVS back-propagates into the proposal networks on every step (nerfacto: on a few), so there it matters:
  :func:`with_fast_hash_lookups`.
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
from typing import Any, Callable, Dict, Iterator, List, Literal, Optional, Sequence, Tuple, Type

import torch
from torch.optim import Optimizer, lr_scheduler
from torch.overrides import TorchFunctionMode

from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecayScheduler, ExponentialDecaySchedulerConfig
from nerfstudio.field_components.encodings import HashEncoding

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


class _TableGradient:
    """The gradient of a hash table ``[rows, 2]`` that the lookups of one pass add to, each row's two features held as
    one complex number, so that ``index_add_`` adds whole rows in one pass over 1-D tensors (advanced indexing's
    backward, ``index_put_(accumulate=True)``, is several times slower on a CPU, and ``index_add_`` over 2-D rows
    becomes a scatter that sorts the indices when torch has several threads). One table of zeros per pass, where
    autograd would allocate one per lookup and add them up."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.values: Optional[torch.Tensor] = None

    def add(self, indices: torch.Tensor, grad: torch.Tensor) -> None:
        """Adds ``grad [*shape, 2]`` at the rows ``indices [*shape]``."""
        row_grads = torch.view_as_complex(grad.reshape(-1, 2).contiguous())
        if self.values is None:
            self.values = row_grads.new_zeros(self.rows)
        self.values.index_add_(0, indices.reshape(-1), row_grads)


class _TableForLookups(torch.autograd.Function):
    """The hash table itself, whose backward hands the table what its lookups added to ``gradient``. The lookups use
    this function's output, so autograd runs all their backward passes before this one."""

    @staticmethod
    def forward(ctx: Any, table: torch.Tensor, gradient: _TableGradient) -> torch.Tensor:
        ctx.gradient = gradient
        ctx.set_materialize_grads(False)
        return table.view_as(table)

    @staticmethod
    def backward(ctx: Any, _: Optional[torch.Tensor]) -> Tuple[Optional[torch.Tensor], None]:
        # Taken, not read: a second backward through the same graph (retain_graph) adds up from zero again.
        values, ctx.gradient.values = ctx.gradient.values, None
        return (None if values is None else torch.view_as_real(values)), None


class _HashTableLookup(torch.autograd.Function):
    """``table[indices]`` as nerfstudio computes it, for a table ``[rows, 2]`` from :class:`_TableForLookups` and
    integer ``indices [*shape]`` → ``[*shape, 2]``; the backward adds to the pass's :class:`_TableGradient`."""

    @staticmethod
    def forward(ctx: Any, table: torch.Tensor, indices: torch.Tensor, gradient: _TableGradient) -> torch.Tensor:
        ctx.save_for_backward(indices)
        ctx.gradient = gradient
        return table[indices]  # nerfstudio's own lookup: the forward pass costs what nerfacto's does

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[None, None, None]:
        (indices,) = ctx.saved_tensors
        ctx.gradient.add(indices, grad)
        return None, None, None


class HashLookupsAsIndexAdd(TorchFunctionMode):
    """Inside: ``table[indices]`` on the hash table (float32 or float64) of one of ``encodings`` runs as
    :class:`_HashTableLookup`, with the same values and gradients; every other operation runs unchanged. One mode per
    pass: the lookups of a table within it share one :class:`_TableGradient`."""

    def __init__(self, encodings: Sequence[HashEncoding]) -> None:
        super().__init__()
        self.encodings = encodings
        self.tables: Dict[int, Tuple[torch.Tensor, _TableGradient]] = {}

    def __torch_function__(self, func: Callable, types: Any, args: Tuple = (), kwargs: Any = None) -> Any:
        if func is torch.Tensor.__getitem__:
            table, indices = args
            if (
                isinstance(indices, torch.Tensor)
                and table.dtype in (torch.float32, torch.float64)
                and any(table is encoding.hash_table for encoding in self.encodings)
            ):
                if id(table) not in self.tables:
                    gradient = _TableGradient(table.shape[0])
                    self.tables[id(table)] = (_TableForLookups.apply(table, gradient), gradient)
                table_for_lookups, gradient = self.tables[id(table)]
                return _HashTableLookup.apply(table_for_lookups, indices, gradient)
        return func(*args, **(kwargs or {}))


def with_fast_hash_lookups(function: Callable, module: torch.nn.Module) -> Callable:
    """``function`` (a proposal network's ``density_fn``) run with :class:`HashLookupsAsIndexAdd` for the torch hash
    grids in ``module`` with two features per level (nerfacto's); ``function`` itself where ``module`` has none
    (tiny-cuda-nn's grids are fused already).

    The forward pass is nerfstudio's; the backward, which RVS adds to every training step, is what gets faster (README,
    "Decisions worth knowing", "The work RVS adds to each step runs on faster torch paths").
    """
    encodings: List[HashEncoding] = [
        m
        for m in module.modules()
        if isinstance(m, HashEncoding) and m.tcnn_encoding is None and m.features_per_level == 2
    ]
    if not encodings:
        return function

    @functools.wraps(function)
    def with_fast_lookups(*args, **kwargs):
        with HashLookupsAsIndexAdd(encodings):
            return function(*args, **kwargs)

    return with_fast_lookups


def default_device_type() -> Literal["cuda", "cpu"]:
    """``"cuda"`` where a GPU is visible, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class AdamBetasOptimizerConfig(AdamOptimizerConfig):
    """nerfstudio's Adam with its betas and torch's fused implementation settable (nerfstudio 1.1.5 leaves them at
    torch's defaults)."""

    betas: Tuple[float, float] = (0.9, 0.999)
    fused: Optional[bool] = None
    """torch's fused Adam (one kernel over all parameters, on CPU and CUDA; None: torch's choice, a loop on the CPU)."""


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
