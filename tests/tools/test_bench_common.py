"""``rvs-bench``'s shared parts: method strings, method configs on the main-process data manager, overwrite check."""

from __future__ import annotations

import copy

import pytest

from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig
from nerfstudio.data.datamanagers.parallel_datamanager import ParallelDataManagerConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from rvs_nerfstudio.method_configs import rvs_mc, rvs_nerfacto
from rvs_nerfstudio.tools.bench.common import (
    MethodSpec,
    method_config,
    parse_as_users_do,
    parse_method,
    parse_methods,
    refuse_to_overwrite,
)

# --- Method strings ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, name, options",
    [
        ("nerfacto", "nerfacto", ()),
        ("rvs-mc:K=8", "rvs-mc", (("num_radiance_samples", 8),)),
        ("rvs-mc:K=4,eval_num_radiance_samples=16", "rvs-mc", (("num_radiance_samples", 4), ("eval_num_radiance_samples", 16))),
        ("rvs-nerfacto:density_padding=0.5,density_interpolation=constant", "rvs-nerfacto",
         (("density_padding", 0.5), ("density_interpolation", "constant"))),
        ("rvs-nerfacto:use_distortion_loss=false", "rvs-nerfacto", (("use_distortion_loss", False),)),
        ("rvs-mc:num_proposal_samples_per_ray=128/64", "rvs-mc", (("num_proposal_samples_per_ray", (128, 64)),)),
    ],
)
def test_method_strings_parse(text, name, options):
    assert parse_method(text) == MethodSpec(label=text, name=name, model_options=options)


@pytest.mark.parametrize(
    "text, message",
    [("rvs-mc:K", "cannot read option"), (":K=8", "has no name"), ("rvs-mc:K=8,K=4", "twice"), ("rvs-mc:=3", "cannot read")],
)
def test_malformed_method_strings_exit_with_one_line(text, message):
    with pytest.raises(SystemExit, match=message) as error:
        parse_method(text)
    assert "\n" not in str(error.value)


def test_method_options_are_set_after_the_preset_on_a_copy():
    methods = {"rvs-mc": rvs_mc.config, "rvs-nerfacto": rvs_nerfacto.config}
    config = method_config(parse_method("rvs-mc:K=4,num_nerf_samples_per_ray=10,density_padding=3"), methods, "cpu-small")
    model = config.pipeline.model
    assert model.num_radiance_samples == 4
    assert model.num_nerf_samples_per_ray == 10  # the option wins over the preset's 24
    assert model.density_padding == 3.0 and isinstance(model.density_padding, float)
    assert model.num_levels == 8 and config.pipeline.datamanager.train_num_rays_per_batch == 512  # preset applied
    assert rvs_mc.config.pipeline.model.num_radiance_samples == 8  # the registered config is untouched
    assert rvs_mc.config.pipeline.model.num_levels == 16

    with pytest.raises(SystemExit, match="rvs-nerfacto's model has no option 'num_radiance_samples'"):
        method_config(parse_method("rvs-nerfacto:K=4"), methods, "cpu-small")
    with pytest.raises(SystemExit, match="unknown method 'nerfactoo'; registered: rvs-mc, rvs-nerfacto"):
        method_config(parse_method("nerfactoo"), methods, "cpu-small")


def test_dotted_options_set_the_trainer_config_at_that_path():
    methods = {"rvs-nerfacto": rvs_nerfacto.config}
    text = "rvs-nerfacto:optimizers.proposal_networks.optimizer.lr=1e-3,pipeline.datamanager.train_num_rays_per_batch=256"
    config = method_config(parse_method(text), methods, "cpu-small")
    assert config.optimizers["proposal_networks"]["optimizer"].lr == 1e-3
    assert config.optimizers["fields"]["optimizer"].lr == 1e-2  # only the named one
    assert config.pipeline.datamanager.train_num_rays_per_batch == 256
    assert rvs_nerfacto.config.optimizers["proposal_networks"]["optimizer"].lr == 1e-2  # registered config untouched
    for key in ("optimizers.proposal_network.optimizer.lr", "pipeline.model.no_such_field"):
        with pytest.raises(SystemExit, match=f"^rvs-bench: rvs-nerfacto's config has no option '{key}'"):
            method_config(parse_method(f"rvs-nerfacto:{key}=1"), methods, "cpu-small")


def test_every_method_draws_its_rays_in_the_main_process():
    nerfacto_like = copy.deepcopy(rvs_nerfacto.config)
    nerfacto_like.pipeline.datamanager = ParallelDataManagerConfig(
        dataparser=NerfstudioDataParserConfig(), train_num_rays_per_batch=4096, eval_num_rays_per_batch=2048, num_processes=1
    )
    config = method_config(parse_method("nerfacto"), {"nerfacto": nerfacto_like}, "full")
    datamanager = config.pipeline.datamanager
    assert type(datamanager) is VanillaDataManagerConfig and datamanager._target is VanillaDataManager
    assert isinstance(datamanager.dataparser, NerfstudioDataParserConfig)
    assert (datamanager.train_num_rays_per_batch, datamanager.eval_num_rays_per_batch) == (4096, 2048)
    assert type(nerfacto_like.pipeline.datamanager) is ParallelDataManagerConfig  # the registered config is untouched




@pytest.mark.parametrize("texts", [(), ("nerfacto", "nerfacto")])
def test_method_lists_need_one_method_each_once(texts):
    with pytest.raises(SystemExit, match="^rvs-bench: give at least one method, each once$"):
        parse_methods(texts)


def test_existing_report_files_are_not_overwritten(tmp_path):
    (tmp_path / "steps.md").write_text("earlier results")
    with pytest.raises(SystemExit, match=r"^rvs-bench: .*steps\.md exists; pass --overwrite or pick another --output$"):
        refuse_to_overwrite(tmp_path, "steps", False)
    refuse_to_overwrite(tmp_path, "steps", True)  # allowed
    refuse_to_overwrite(tmp_path, "quality", False)  # another report's files do not count
    assert (tmp_path / "steps.md").read_text() == "earlier results"


@pytest.mark.parametrize(
    "layout, parser", [("nerfstudio", "NerfstudioDataParserConfig"), ("blender", "BlenderDataParserConfig"),
                       ("llff", "LLFFDataParserConfig")],
)
def test_nerfacto_reads_each_layout_with_its_own_parser_and_ours_detect_it(layout, parser):
    from nerfstudio.configs.method_configs import all_methods

    nerfacto = parse_as_users_do(copy.deepcopy(all_methods["nerfacto"]), layout)
    ours = parse_as_users_do(copy.deepcopy(all_methods["rvs-nerfacto"]), layout)
    assert type(nerfacto.pipeline.datamanager.dataparser).__name__ == parser
    assert type(ours.pipeline.datamanager.dataparser).__name__ == "AutoDataParserConfig"
