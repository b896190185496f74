"""Console script ``rvs-bench``: one subcommand per benchmark (``quality``, ``steps``, ``render``, ``sampler``), and
``merge`` for quality reports made in separate processes."""

from __future__ import annotations

import shlex
import sys
from typing import Union

import tyro
from typing_extensions import Annotated

from nerfstudio.utils.rich_utils import CONSOLE
from rvs_nerfstudio.engine.compat import quiet_library_warnings
from rvs_nerfstudio.tools.bench import common
from rvs_nerfstudio.tools.bench.quality import MergeConfig, QualityConfig, run_merge, run_quality
from rvs_nerfstudio.tools.bench.render import RenderConfig, run_render
from rvs_nerfstudio.tools.bench.sampler import SamplerConfig, run_sampler
from rvs_nerfstudio.tools.bench.steps import StepsConfig, run_steps

Subcommand = Union[
    Annotated[QualityConfig, tyro.conf.subcommand("quality")],
    Annotated[StepsConfig, tyro.conf.subcommand("steps")],
    Annotated[RenderConfig, tyro.conf.subcommand("render")],
    Annotated[SamplerConfig, tyro.conf.subcommand("sampler")],
    Annotated[MergeConfig, tyro.conf.subcommand("merge")],
]

RUNNERS = {
    QualityConfig: run_quality, StepsConfig: run_steps, RenderConfig: run_render, SamplerConfig: run_sampler,
    MergeConfig: run_merge,
}
"""Each subcommand's config type → the function that runs it with the command line."""


def entrypoint() -> None:
    """Console script ``rvs-bench``."""
    quiet_library_warnings()
    config = tyro.cli(Subcommand, prog=common.COMMAND, description=__doc__)
    RUNNERS[type(config)](config, shlex.join([common.COMMAND, *sys.argv[1:]]))
    CONSOLE.print(f"{common.COMMAND}: wrote its report to {config.output}", markup=False, soft_wrap=True)


if __name__ == "__main__":
    entrypoint()
