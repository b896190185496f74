"""``rvs-demo``: generate the built-in synthetic scene, train an ``rvs-*`` method on it, print ``ns-eval`` metrics.

Runs the real ``ns-train`` and ``ns-eval`` commands, so what it shows is what a user gets. Without a GPU it
uses the ``cpu-small`` preset and a few hundred steps (minutes on two cores); with one, nerfacto's full
settings.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Literal, Optional

import torch
import tyro
from rich.console import Console
from rich.table import Table

from rvs_nerfstudio.data.synth import SynthConfig, generate_scene
from rvs_nerfstudio.engine.compat import quiet_library_warnings
from rvs_nerfstudio.tools import presets

CONSOLE = Console()


@dataclass
class DemoConfig:
    """Train and evaluate an RVS method on the built-in synthetic scene."""

    method: Literal["rvs-nerfacto"] = "rvs-nerfacto"
    """Method to train."""
    data: Path = Path("data/rvs-synth/object")
    """Scene folder; the synthetic object scene is generated there if it does not exist."""
    output_dir: Path = Path("outputs/demo")
    """Where ns-train writes its run folder."""
    steps: Optional[int] = None
    """Training steps (default: 600 on CPU with the cpu-small preset, 30000 on a GPU)."""


def _run(command: List[str]) -> None:
    """Runs an ns-* command, streaming its output; exits with its one-line failure otherwise."""
    CONSOLE.print(f"[bold]$ {' '.join(command)}")
    if subprocess.run(command).returncode != 0:
        raise SystemExit(f"rvs-demo: `{command[0]}` failed (see its output above).")


def _latest_config(output_dir: Path, method: str) -> Path:
    configs = sorted(output_dir.glob(f"*/{method}/*/config.yml"))
    if not configs:
        raise SystemExit(f"rvs-demo: ns-train wrote no config.yml under {output_dir}.")
    return configs[-1]


def run_demo(config: DemoConfig) -> dict:
    """Generates the scene if needed, trains, evaluates, and returns the ns-eval results dict."""
    if not config.data.exists():
        generate_scene(SynthConfig(output=config.data))
    on_gpu = torch.cuda.is_available()
    steps = config.steps or (30000 if on_gpu else 600)
    bin_dir = Path(sys.executable).parent
    _run(
        [str(bin_dir / "ns-train"), config.method, "--data", str(config.data), "--output-dir", str(config.output_dir)]
        + ["--vis", "tensorboard", "--max-num-iterations", str(steps), "--steps-per-save", str(steps)]
        + presets.cli_args("full" if on_gpu else "cpu-small", config.method)
    )
    trained = _latest_config(config.output_dir, config.method)
    metrics_path = trained.parent / "eval.json"
    _run([str(bin_dir / "ns-eval"), "--load-config", str(trained), "--output-path", str(metrics_path)])
    return json.loads(metrics_path.read_text())["results"]


def entrypoint() -> None:
    """Console script ``rvs-demo``."""
    quiet_library_warnings()
    results = run_demo(tyro.cli(DemoConfig))
    table = Table(title="Held-out metrics (ns-eval)")
    for name in ("metric", "value"):
        table.add_column(name)
    for name, value in results.items():
        table.add_row(name, f"{value:.4f}")
    CONSOLE.print(table)
