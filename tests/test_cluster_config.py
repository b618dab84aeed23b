"""cluster.yaml and cluster-onprem.yaml against Ray's cluster schema, against what `ray up` needs of them, and their
setup commands run as a new node runs them: in a fresh $HOME, with the checkout synced the way `ray up` syncs it.

The real bring-up of cluster-onprem.yaml is tests/test_ray_up.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml

from uhlm_ray.config import load_config

ROOT = Path(__file__).resolve().parents[1]
FILES = ("cluster.yaml", "cluster-onprem.yaml")
# run on Ubuntu hosts only (this machine's packages are already there): the install of python3-venv and rsync
HOST_PACKAGES = "sudo apt-get"


def _load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def _validate(config: dict) -> None:
    """Ray's own cluster schema (the file `ray up` validates against), without Ray's private helpers."""
    schema = json.loads(resources.files("ray.autoscaler").joinpath("ray-schema.json").read_text())
    jsonschema.validate(config, schema)


@pytest.mark.parametrize("name", FILES)
def test_cluster_files_follow_rays_schema(name):
    _validate(_load(name))


def test_validation_is_not_vacuous():
    broken = _load("cluster.yaml")
    broken["available_node_types"]["device_cpu"]["min_wrkers"] = 1
    with pytest.raises(jsonschema.ValidationError, match="min_wrkers"):
        _validate(broken)


def test_cloud_cluster_places_trials_devices_and_the_verifier_as_the_job_config_asks():
    config = _load("cluster.yaml")
    types = config["available_node_types"]
    assert types["head"]["resources"] == {"CPU": 0}, "the head takes no trial, device or verifier"
    assert types["verifier_gpu"]["min_workers"] == 0, "no GPU node runs through a CPU-only sweep"
    assert types["verifier_gpu"]["resources"]["GPU"] >= 1 and types["verifier_gpu"]["resources"]["verifier"] >= 1
    assert types["device_cpu"]["resources"]["device"] >= 1 and types["device_cpu"]["resources"]["trial"] == 1
    for node_type in types.values():
        assert node_type["node_config"]["ImageId"].startswith("resolve:ssm:/aws/service/"), "a current AMI"
        assert "worker_setup_commands" not in node_type, "a per-type list would replace the global setup"
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])
    job = load_config(yaml_path=ROOT / "jobs" / "configs" / "cluster.yaml")
    assert job.runtime.verifier_device == "cuda", "a missing GPU is an error, not a silent CPU fallback"
    assert set(job.runtime.verifier_resources) <= set(types["verifier_gpu"]["resources"])
    assert set(job.runtime.device_actor_resources) <= set(types["device_cpu"]["resources"])
    assert job.runtime.verifier_num_gpus <= types["verifier_gpu"]["resources"]["GPU"]


@pytest.mark.parametrize("name", FILES)
def test_every_command_is_valid_shell(name):
    config = _load(name)
    for key in ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
                "head_start_ray_commands", "worker_start_ray_commands"):
        for command in config.get(key) or []:
            checked = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
            assert checked.returncode == 0, f"{name} {key}: {command!r}: {checked.stderr}"
    started = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert "source ~/uhlm-venv/bin/activate" in started, "a job's `python` must be the venv's"


def _sync_checkout(config: dict, home: Path) -> None:
    """What `ray up` does with file_mounts: rsync the checkout to the node, with the file's own excludes."""
    (target,) = [remote for remote, local in config["file_mounts"].items() if local == "."]
    excludes = [arg for pattern in config["rsync_exclude"] for arg in ("--exclude", pattern)]
    destination = home / target.removeprefix("~/")
    destination.mkdir(parents=True)
    subprocess.run(["rsync", "-a", *excludes, f"{ROOT}/", f"{destination}/"], check=True)
    assert not (destination / ".venv").exists() and (destination / "pyproject.toml").is_file()


@pytest.mark.skipif(shutil.which("rsync") is None, reason="needs rsync (apt-get install rsync), as `ray up` does")
@pytest.mark.parametrize("name", FILES)
def test_setup_commands_run_on_a_fresh_node_up_to_the_install(name, tmp_path):
    """Each setup command in a fresh $HOME; the project's install resolves every requirement against this machine's
    package index (pip --dry-run: nothing is installed, but a requirement pip cannot parse or resolve fails)."""
    config = _load(name)
    home = tmp_path / "home"
    _sync_checkout(config, home)
    env = {"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
           "PIP_CACHE_DIR": str(Path.home() / ".cache" / "pip"), "PIP_NO_INPUT": "1",
           **{k: v for k, v in os.environ.items() if k.startswith("PIP_") or k.endswith("_proxy")}}
    commands = [c for c in config.get("initialization_commands", []) if not c.startswith(HOST_PACKAGES)]
    commands += config["setup_commands"] + config.get("head_setup_commands", [])
    installed = False
    for command in commands:
        install = "-e \"$HOME/uhlm_ray[" in command
        if installed:
            break  # after the install come steps that need it (the model cache): out of this test's reach
        if install:  # on the command line, not as PIP_DRY_RUN, which the build backend's own pip would inherit
            assert command.count("-m pip install ") == 1, command
            command = command.replace("-m pip install ", "-m pip install --dry-run ").replace(" -q ", " ")
        done = subprocess.run(["bash", "-c", command], cwd=home, env=env, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, f"{name}: {command!r} failed on a fresh node:\n{done.stderr[-3000:]}"
        if install:
            assert "Would install" in done.stdout and "torch-2.13.0" in done.stdout, done.stdout[-2000:]
            installed = True
    assert installed, f"{name}: no setup command installs the project from the synced checkout"
    assert (home / "uhlm-venv" / "bin" / "python").is_file()
