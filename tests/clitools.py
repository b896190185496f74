"""Running the real ``ns-*`` and ``rvs-*`` commands in subprocesses, offline, for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List

from rvs_nerfstudio import presets

BIN = Path(sys.executable).parent

OFFLINE_ENV = {
    **os.environ,
    # Any download (e.g. LPIPS' AlexNet weights) fails at once, as on a machine without internet.
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "",
    "PYTHONWARNINGS": "ignore::DeprecationWarning,ignore::FutureWarning",
}


def run_cli(args: List[str], timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    """Runs ``BIN/args[0] args[1:]`` offline; on unexpected failure, fails with the command's output."""
    result = subprocess.run(
        [str(BIN / args[0]), *map(str, args[1:])], env=OFFLINE_ENV, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def preset_flags(method: str, preset: str = "cpu-small") -> List[str]:
    """The preset's ``ns-train`` flags for ``method``; rvs-mc hides num-nerf-samples-per-ray (K replaces it)."""
    flags = presets.cli_args(preset)
    if method == "rvs-mc" and "--pipeline.model.num-nerf-samples-per-ray" in flags:
        index = flags.index("--pipeline.model.num-nerf-samples-per-ray")
        del flags[index : index + 2]
    return flags


def train(method: str, data: Path, output_dir: Path, steps: int, *extra: str) -> Path:
    """``ns-train`` with the cpu-small preset and no device flag; returns the run's ``config.yml``."""
    run_cli(
        ["ns-train", method, "--data", data, "--output-dir", output_dir, "--vis", "tensorboard"]
        + ["--max-num-iterations", str(steps), "--steps-per-save", str(max(1, steps // 2))]
        + preset_flags(method)
        + list(extra)
    )
    (config,) = output_dir.glob(f"*/{method}/*/config.yml")
    return config
