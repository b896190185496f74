"""``rvs-bench sampler``: the RVS resampling step timed against nerfstudio's ``PDFSampler`` (and nerfacc on CUDA).

Every sampler gets the same rays and the same proposal level: ``num_bins`` bins per ray (nerfacto's
uniform-then-disparity spacing, near 0.05, far 1000) with log-normal densities, and draws ``num_samples`` new
bins per ray in training mode (stratified jitter), float32. Rows:

- ``PDFSampler``: nerfacto's resampler (``include_original=False``) from precomputed weights. It detaches its
  samples, so it has no backward.
- ``weights+PDF``: the same from the densities (``RaySamples.get_weights`` first), as in nerfacto's
  proposal loop; its backward is that of the weights, the only gradient path there (the interlevel loss's).
- ``RVS resample``: :meth:`~rvs_nerfstudio.samplers.proposal.RVSProposalSampler.resample` from the densities (density
  spline, reparameterized inverse CDF, conversion to distances); backward from the samples to the densities.
- ``RVS core``: :func:`rvs_nerfstudio.core.spline.sample` alone, on precomputed knots and quantiles.
- ``nerfacc`` (CUDA only): nerfacc's fused ``importance_sampling`` kernel on PDFSampler's CDF; no backward.

The ratio column divides each forward time by PDFSampler's forward time on the same device.
Each time is a median of ``torch.utils.benchmark``'s ``blocked_autorange`` (warm-up, CUDA synchronisation,
torch's thread count). The samplers are timed in interleaved rounds and each keeps its fastest round, so that
load from other processes, which comes and goes, biases the ratios less. Writes ``sampler.json`` and ``sampler.md``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Literal, Optional, Tuple

import torch
from torch.utils import benchmark

from nerfstudio.cameras.rays import RayBundle, RaySamples
from nerfstudio.model_components.ray_samplers import PDFSampler, UniformLinDispPiecewiseSampler
from nerfstudio.utils.rich_utils import CONSOLE
from rvs_nerfstudio.core import spline
from rvs_nerfstudio.samplers.proposal import RVSProposalSampler, spline_from_bins
from rvs_nerfstudio.tools import reports
from rvs_nerfstudio.tools.bench import common

REPORT = "sampler"

TARGET_RATIO = 1.5
"""The issue's target: RVS resample forward at most this many times PDFSampler's forward on the CPU."""


@dataclass
class SamplerConfig:
    """Time the RVS resampling step against nerfstudio's PDFSampler (and nerfacc's importance_sampling on CUDA)."""

    num_rays: int = 4096
    """Rays per batch."""
    num_bins: int = 256
    """Proposal bins per ray that are resampled (the density spline's knots)."""
    num_samples: int = 96
    """Bins drawn per ray."""
    devices: Tuple[Literal["cpu", "cuda"], ...] = ("cpu", "cuda")
    """Devices to time on; cuda is skipped where there is no GPU."""
    num_threads: Optional[int] = None
    """CPU threads for torch (default: torch's own choice, usually one per core)."""
    min_run_time: float = 0.5
    """Seconds of repeated calls per measurement (after warm-up)."""
    rounds: int = 5
    """Interleaved rounds of measurements; each sampler keeps its fastest round."""
    seed: int = 0
    """Seed of the ray directions and densities."""
    profile: bool = False
    """Also print torch.profiler's top operators of the RVS resample forward on each device."""
    output: Path = Path("outputs/rvs-bench")
    """Folder for sampler.json and sampler.md."""
    overwrite: bool = False
    """Replace earlier results in OUTPUT."""


@dataclass
class SamplerTiming:
    """One sampler on one device."""

    device: str
    sampler: str
    forward_ms: float
    backward_note: str
    """Which output the forward+backward time differentiates, or why there is none."""
    forward_backward_ms: Optional[float]
    bins_per_ray: int
    """Bins per ray in the sampler's output."""


@dataclass
class _Inputs:
    """One proposal level of ``num_rays`` rays, and everything each sampler takes."""

    ray_bundle: RayBundle
    ray_samples: RaySamples
    density: torch.Tensor
    weights: torch.Tensor
    knots: torch.Tensor
    knot_densities: torch.Tensor
    u: torch.Tensor


def make_inputs(config: SamplerConfig, device: str) -> _Inputs:
    """Rays from the origin in random directions, nerfacto's initial bins, log-normal densities."""
    generator = torch.Generator().manual_seed(config.seed)
    directions = torch.nn.functional.normalize(torch.randn(config.num_rays, 3, generator=generator), dim=-1)
    ones = torch.ones(config.num_rays, 1)
    ray_bundle = RayBundle(
        origins=torch.zeros(config.num_rays, 3),
        directions=directions,
        pixel_area=ones * 1e-6,
        camera_indices=torch.zeros(config.num_rays, 1, dtype=torch.long),
        nears=ones * 0.05,
        fars=ones * 1000.0,
    ).to(device)
    ray_samples = UniformLinDispPiecewiseSampler().eval()(ray_bundle, num_samples=config.num_bins)  # no jitter
    density = torch.exp(2 * torch.randn(config.num_rays, config.num_bins, 1, generator=generator) - 2).to(device)
    knots, knot_densities = spline_from_bins(ray_samples, density, padding=1.0)
    u = spline.stratified_u(knots.shape[:-1], config.num_samples + 1, "independent", device)
    return _Inputs(ray_bundle, ray_samples, density, ray_samples.get_weights(density), knots, knot_densities, u)


def _timed_ms(function: Callable[[], object], min_run_time: float) -> float:
    """Median milliseconds per call of ``function`` (torch.utils.benchmark: warm-up, CUDA sync, all threads)."""
    timer = benchmark.Timer(stmt="function()", globals={"function": function}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def _cases(inputs: _Inputs, num_samples: int) -> List[Tuple[str, Callable, Optional[Callable], str]]:
    """(name, forward returning its bins' starts ``[rays, bins, 1]``, forward+backward or None, backward note)."""
    pdf = PDFSampler(include_original=False).train()
    rvs = RVSProposalSampler((inputs.ray_samples.shape[-1],), num_samples, density_padding=1.0).train()
    density = inputs.density.detach().requires_grad_(True)
    knot_densities = inputs.knot_densities.detach().requires_grad_(True)

    def pdf_forward(weights: torch.Tensor = inputs.weights) -> torch.Tensor:
        samples = pdf.generate_ray_samples(inputs.ray_bundle, inputs.ray_samples, weights, num_samples)
        return samples.spacing_starts

    def pdf_with_weights_forward() -> Tuple[torch.Tensor, torch.Tensor]:
        weights = inputs.ray_samples.get_weights(density)
        return pdf_forward(weights), weights

    def pdf_with_weights_backward() -> None:
        _, weights = pdf_with_weights_forward()
        torch.autograd.grad(weights.sum(), [density])

    def rvs_forward() -> torch.Tensor:
        return rvs.resample(inputs.ray_bundle, inputs.ray_samples, density, num_samples).spacing_starts

    def rvs_backward() -> None:
        torch.autograd.grad(rvs_forward().sum(), [density])

    def core_forward() -> torch.Tensor:
        return spline.sample(inputs.knots, knot_densities, inputs.u)[..., :-1, None]

    def core_backward() -> None:
        torch.autograd.grad(core_forward().sum(), [knot_densities])

    cases = [
        ("PDFSampler", pdf_forward, None, "— (detached)"),
        ("weights+PDF", lambda: pdf_with_weights_forward()[0], pdf_with_weights_backward, "weights"),
        ("RVS resample", rvs_forward, rvs_backward, "samples"),
        ("RVS core", core_forward, core_backward, "samples"),
    ]
    if inputs.density.is_cuda:
        try:
            nerfacc_forward = _nerfacc_forward(inputs, num_samples)
            nerfacc_forward()  # builds nerfacc's CUDA extension on first use
            cases.append(("nerfacc", nerfacc_forward, None, "— (no autograd)"))
        except (ImportError, RuntimeError, OSError) as error:
            CONSOLE.print(f"nerfacc skipped: its CUDA extension is unavailable ({error})", markup=False, soft_wrap=True)
    return cases


def _nerfacc_forward(inputs: _Inputs, num_samples: int) -> Callable[[], torch.Tensor]:
    """nerfacc's CUDA inverse-CDF resampler on the same bins and the same (padded) PDF as PDFSampler."""
    from nerfacc.data_specs import RayIntervals
    from nerfacc.pdf import importance_sampling

    assert inputs.ray_samples.spacing_starts is not None and inputs.ray_samples.spacing_ends is not None
    edges = torch.cat([inputs.ray_samples.spacing_starts[..., 0], inputs.ray_samples.spacing_ends[..., -1:, 0]], -1)
    weights = inputs.weights[..., 0] + 0.01  # PDFSampler's histogram padding
    cdfs = torch.cat([torch.zeros_like(weights[..., :1]), torch.cumsum(weights, -1)], -1) / weights.sum(-1, keepdim=True)

    def forward() -> torch.Tensor:
        intervals, _ = importance_sampling(RayIntervals(vals=edges), cdfs, num_samples, stratified=True)
        return intervals.vals[..., :-1, None]

    return forward


def time_samplers(config: SamplerConfig, device: str) -> List[SamplerTiming]:
    """Times every sampler of the module docstring on ``device``: forward under ``no_grad``, then forward+backward."""
    cases = _cases(make_inputs(config, device), config.num_samples)
    timings = []
    for name, forward, _, note in cases:
        with torch.no_grad():
            timings.append(SamplerTiming(device, name, float("inf"), note, None, forward().shape[-2]))
    for _ in range(config.rounds):
        for timing, (_, forward, forward_backward, _) in zip(timings, cases):
            with torch.no_grad():
                timing.forward_ms = min(timing.forward_ms, _timed_ms(forward, config.min_run_time))
            if forward_backward is not None:
                both_ms = _timed_ms(forward_backward, config.min_run_time)
                timing.forward_backward_ms = min(timing.forward_backward_ms or both_ms, both_ms)
    return timings


def profile_rvs(config: SamplerConfig, device: str, rows: int = 15) -> str:
    """torch.profiler's operators of the RVS resample forward on ``device``, by self time."""
    inputs = make_inputs(config, device)
    rvs = RVSProposalSampler((config.num_bins,), config.num_samples, density_padding=1.0).train()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.no_grad():
        for _ in range(3):  # warm-up
            rvs.resample(inputs.ray_bundle, inputs.ray_samples, inputs.density, config.num_samples)
        with torch.profiler.profile(activities=activities) as profiler:
            for _ in range(10):
                rvs.resample(inputs.ray_bundle, inputs.ray_samples, inputs.density, config.num_samples)
    sort_by = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    return profiler.key_averages().table(sort_by=sort_by, row_limit=rows)


def run_sampler_bench(config: SamplerConfig) -> List[SamplerTiming]:
    """Times all samplers on each requested device that is present."""
    devices = [d for d in config.devices if d == "cpu" or torch.cuda.is_available()]
    return [timing for device in devices for timing in time_samplers(config, device)]


def forward_ratio(timings: List[SamplerTiming], device: str, sampler: str = "RVS resample") -> float:
    """``sampler``'s forward time over PDFSampler's forward time on ``device``."""
    forward = {t.sampler: t.forward_ms for t in timings if t.device == device}
    return forward[sampler] / forward["PDFSampler"]


def markdown(record: Dict[str, object], timings: List[SamplerTiming]) -> str:
    """The table with a caption (date, hardware, command, sizes) and the verdict on the CPU target."""
    config = record["config"]
    setup = (
        f"{config['num_rays']} rays, {config['num_bins']} bins → {config['num_samples']} bins per ray, float32; each "
        f"time is the fastest of {config['rounds']} interleaved rounds."
    )
    lines = [
        reports.caption(record["date"], record["hardware"], record["command"], setup),
        "| device | sampler | bins | fwd ms | fwd ÷ PDF | fwd+bwd ms | backward of |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for timing in timings:
        both = "—" if timing.forward_backward_ms is None else f"{timing.forward_backward_ms:.2f}"
        ratio = forward_ratio(timings, timing.device, timing.sampler)
        lines.append(
            f"| {timing.device} | {timing.sampler} | {timing.bins_per_ray} | {timing.forward_ms:.2f} | {ratio:.2f}× | "
            f"{both} | {timing.backward_note} |"
        )
    lines.append("")
    for device in sorted({t.device for t in timings}):
        ratio = forward_ratio(timings, device)
        verdict = ("met" if ratio <= TARGET_RATIO else "missed") if device == "cpu" else "no target"
        lines.append(f"{device}: RVS resample forward = {ratio:.2f}× PDFSampler forward (target ≤ {TARGET_RATIO}× on cpu: {verdict})")
    return "\n".join(lines) + "\n"


def run_sampler(config: SamplerConfig, command: str) -> List[SamplerTiming]:
    """Times every sampler on each device, writes sampler.json and sampler.md, and returns the timings."""
    common.refuse_to_overwrite(config.output, REPORT, config.overwrite)
    common.check_positive(num_rays=config.num_rays, num_bins=config.num_bins, num_samples=config.num_samples, rounds=config.rounds)
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    timings = run_sampler_bench(config)
    record: Dict[str, object] = {
        "date": reports.now(),
        "command": command,
        "hardware": reports.hardware(),
        "config": {key: str(value) if isinstance(value, Path) else value for key, value in asdict(config).items()},
        "timings": [asdict(t) for t in timings],
    }
    text = markdown(record, timings)
    common.write_report(config.output, REPORT, record, text)
    CONSOLE.print(text, markup=False, highlight=False, soft_wrap=True)
    if config.profile:
        for device in sorted({t.device for t in timings}):
            CONSOLE.print(profile_rvs(config, device), markup=False, highlight=False, soft_wrap=True)
    return timings
