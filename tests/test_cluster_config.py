"""cluster.yaml and cluster-onprem.yaml pass Ray's own validation, as `ray up` runs it (prepare, then validate)."""

import copy
from pathlib import Path

import pytest
import yaml

from uhlm_ray.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def _prepared(name: str) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(yaml.safe_load((ROOT / name).read_text())))
    validate_config(config)
    return config


def test_cloud_cluster_has_device_and_verifier_workers():
    config = _prepared("cluster.yaml")
    types = config["available_node_types"]
    assert types["verifier_gpu"]["resources"]["GPU"] >= 1 and types["verifier_gpu"]["resources"]["verifier"] >= 1
    assert types["device_cpu"]["resources"]["device"] >= 1
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])
    # the job config that goes with it asks for exactly those resources
    job = load_config(yaml_path=ROOT / "jobs" / "configs" / "cluster.yaml")
    assert set(job.runtime.verifier_resources) <= set(types["verifier_gpu"]["resources"])
    assert set(job.runtime.device_actor_resources) <= set(types["device_cpu"]["resources"])
    assert job.runtime.verifier_num_gpus <= types["verifier_gpu"]["resources"]["GPU"]


def test_onprem_cluster_validates():
    config = _prepared("cluster-onprem.yaml")
    assert config["provider"]["type"] == "local" and config["provider"]["worker_ips"]


def test_validation_is_not_vacuous():
    from ray.autoscaler._private.util import prepare_config, validate_config

    broken = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    broken["available_node_types"]["device_cpu"]["min_wrkers"] = 1
    with pytest.raises(Exception, match="min_wrkers"):
        validate_config(prepare_config(broken))
