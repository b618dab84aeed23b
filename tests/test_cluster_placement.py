"""Placement by resources on a multi-node Ray cluster (ray.cluster_utils.Cluster): the verifier asks for a GPU and
the `verifier` resource and lands on the one node that has them; device actors land on CPU nodes."""

from __future__ import annotations

import pytest

from tests.ports import free_port
from uhlm_ray.config import EvaluateConfig, ModelConfig

ray = pytest.importorskip("ray")


@pytest.fixture()
def cluster():
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    gpu_node = cluster.add_node(num_cpus=1, num_gpus=1, resources={"verifier": 1})  # a fake GPU node
    cpu_node = cluster.add_node(num_cpus=2, resources={"device": 2})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster, gpu_node, cpu_node
    from ray import serve

    serve.shutdown()
    ray.shutdown()
    cluster.shutdown()


def test_verifier_on_the_gpu_node_devices_on_cpu_nodes(cluster, tiny_pair_dirs):
    from actors.device_actor import DeviceActor
    from actors.verifier_deployment import ServeVerifierClient, start_verifier
    from uhlm_ray.config import config_to_dict

    _, gpu_node, cpu_node = cluster
    slm, llm = tiny_pair_dirs
    cfg = EvaluateConfig(model=ModelConfig(pair="custom", slm=slm, llm=llm, dtype="float32"))
    cfg.runtime.verifier_num_gpus = 1
    cfg.runtime.verifier_resources = {"verifier": 1}
    cfg.runtime.http_port = free_port()
    start_verifier(cfg)
    info = ServeVerifierClient().info()
    assert info["node_id"] == gpu_node.node_id
    assert info["device"] == "cpu"  # the GPU is fake: the replica falls back to the CPU

    actor = DeviceActor.options(num_cpus=1, resources={"device": 1}).remote(config_to_dict(cfg), "placement")
    node = ray.get(actor.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()))
    assert node == cpu_node.node_id
