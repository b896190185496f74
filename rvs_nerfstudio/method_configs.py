"""Method configs registered through the ``nerfstudio.method_configs`` entry point.

This module is imported by every ``ns-*`` command once the plugin is installed, so it stays cheap and
must not raise. It never imports ``nerfstudio.configs.method_configs`` (that would be circular).
Settings mirror nerfacto's method config so that metrics compare like for like, except where the README's "Decisions" say
otherwise (rvs-nerfacto's proposal learning-rate schedule).
"""

from __future__ import annotations

from nerfstudio.cameras.camera_optimizers import CameraOptimizerConfig
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.models.base_model import ModelConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification
from rvs_nerfstudio.data.parsers import AutoDataParserConfig
from rvs_nerfstudio.engine.compat import AdamBetasOptimizerConfig, PortableExponentialDecaySchedulerConfig, default_device_type
from rvs_nerfstudio.engine.trainer import SafeTrainerConfig
from rvs_nerfstudio.models.rvs_mc import RVSMonteCarloModelConfig
from rvs_nerfstudio.models.rvs_nerfacto import RVSNerfactoModelConfig


def nerfacto_trainer(method_name: str, model: ModelConfig) -> SafeTrainerConfig:
    """Nerfacto's trainer settings around ``model``, with crash-safe checkpoints that load under weights_only,
    a device that exists, and ray batches drawn in the main process (so that a resumed run repeats the
    uninterrupted one; nerfacto's ParallelDataManager draws them in a worker whose random state restarts)."""
    return SafeTrainerConfig(
        method_name=method_name,
        steps_per_eval_batch=500,
        steps_per_save=2000,
        max_num_iterations=30000,
        mixed_precision=True,
        machine=MachineConfig(device_type=default_device_type()),
        pipeline=VanillaPipelineConfig(
            datamanager=VanillaDataManagerConfig(
                dataparser=AutoDataParserConfig(),
                train_num_rays_per_batch=4096,
                eval_num_rays_per_batch=4096,
            ),
            model=model,
        ),
        optimizers={
            "proposal_networks": {
                # Fused: RVS steps this optimizer on every training step, nerfacto on few (README, "Decisions worth
                # knowing").
                "optimizer": AdamBetasOptimizerConfig(lr=1e-2, eps=1e-15, fused=True),
                "scheduler": PortableExponentialDecaySchedulerConfig(lr_final=0.0001, max_steps=200000),
            },
            "fields": {
                "optimizer": AdamOptimizerConfig(lr=1e-2, eps=1e-15),
                "scheduler": PortableExponentialDecaySchedulerConfig(lr_final=0.0001, max_steps=200000),
            },
            "camera_opt": {
                "optimizer": AdamOptimizerConfig(lr=1e-3, eps=1e-15),
                "scheduler": PortableExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=5000),
            },
        },
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer+tensorboard",
    )


def nerfacto_method(method_name: str, model: ModelConfig, description: str) -> MethodSpecification:
    """A method with nerfacto's trainer and nerfacto's method-level model settings (eval chunk, SO3xR3 camera
    optimizer) on ``model``."""
    model.eval_num_rays_per_chunk = 1 << 15
    model.camera_optimizer = CameraOptimizerConfig(mode="SO3xR3")
    return MethodSpecification(config=nerfacto_trainer(method_name, model), description=description)


rvs_nerfacto = nerfacto_method(
    "rvs-nerfacto",
    RVSNerfactoModelConfig(),
    "Nerfacto with reparameterized volume sampling: proposals learn from the RGB loss, no interlevel loss.",
)
# The proposals learn from the RGB loss at every step: their rate falls from nerfacto's 1e-2 to 1e-3 over nerfacto's 5000-step
# proposal warm-up and stays there (the RVS authors train their coarse network at a tenth of the fine one's rate; README,
# "Decisions worth knowing").
rvs_nerfacto.config.optimizers["proposal_networks"]["scheduler"] = PortableExponentialDecaySchedulerConfig(
    lr_final=1e-3, max_steps=5000
)

rvs_mc = nerfacto_method(
    "rvs-mc",
    RVSMonteCarloModelConfig(),
    "Monte Carlo rendering with reparameterized volume sampling: the radiance field runs at K points per ray.",
)
