"""cluster.yaml is accepted by Ray's own cluster-launcher schema (what `ray up` checks first)."""

import pathlib

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_cluster_yaml_validates_against_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    assert config["provider"]["type"] == "local"
    validate_config(prepare_config(config))  # raises on any schema violation


def test_a_broken_cluster_yaml_is_rejected():
    import pytest
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    config["max_workers"] = "many"
    with pytest.raises(Exception):
        validate_config(prepare_config(config))
