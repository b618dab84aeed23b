"""How a job reaches Ray: the configured address, the cluster `ray job submit` runs it in, or a new local Ray."""

from __future__ import annotations

import os

import ray

from uhlm_ray.config import RuntimeConfig


def connect(runtime: RuntimeConfig, *, job: str) -> None:
    """`runtime.address`, else $RAY_ADDRESS (set by `ray job submit`), else "local": never a stale cluster file."""
    address = runtime.address or os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=address, log_to_driver=False)
    where = "a new local Ray" if address == "local" else f"the Ray cluster at {address}"
    print(f"[{job}] connected to {where}: {ray.cluster_resources()}")
