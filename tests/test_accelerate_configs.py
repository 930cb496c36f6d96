"""Every launch config in accelerate_configs/ is one that accelerate itself accepts."""

from __future__ import annotations

import pytest

from tests.conftest import REPO_ROOT

CONFIGS = sorted((REPO_ROOT / "accelerate_configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_accelerate_loads_the_config(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.compute_environment.value == "LOCAL_MACHINE"
    assert config.num_processes >= 1
    if "fsdp" in path.name:
        assert config.fsdp_config["fsdp_version"] == 2
        assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"


def test_the_expected_configs_exist():
    names = {p.name for p in CONFIGS}
    assert {"single_gpu.yaml", "multi_gpu.yaml", "fsdp_qlora.yaml", "fsdp_lora.yaml", "multi_node.yaml", "cpu.yaml"} <= names
