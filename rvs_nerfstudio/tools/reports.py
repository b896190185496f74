"""What every report of the tools carries: the machine it was measured on, a caption, and no overwritten results."""

from __future__ import annotations

import datetime
import os
import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any, Dict, Iterable

import torch


def refuse_to_overwrite(command: str, paths: Iterable[Path], overwrite: bool, output_flag: str = "--output") -> None:
    """A one-line ``SystemExit`` naming the first of ``paths`` that exists, unless ``overwrite``."""
    existing = [path for path in paths if path.exists()]
    if existing and not overwrite:
        raise SystemExit(f"{command}: {existing[0]} exists; pass --overwrite or pick another {output_flag}")


def hardware() -> Dict[str, Any]:
    """CPU model and cores, accelerator, and library versions of this machine."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")] if cpuinfo.exists() else []
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": names[0] if names else platform.processor() or platform.machine(),
        "cpu_cores": cores,
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "nerfstudio": version("nerfstudio"),
        "python": platform.python_version(),
    }


def now() -> str:
    """The current UTC time in ISO format, to the second: the date of a measurement."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def caption(date: str, hw: Dict[str, Any], command: str, setup: str) -> str:
    """Markdown above a results table: date and hardware, what was measured (``setup``), then the command."""
    return (
        f"Measured {date[:10]} on {hw['cpu']} ({hw['cpu_cores']} cores, {hw['torch_threads']} torch threads), "
        f"device {hw['device']}, torch {hw['torch']}, nerfstudio {hw['nerfstudio']}.\n{setup}\n\nCommand: `{command}`\n"
    )
