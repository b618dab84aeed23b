"""How a job reaches Ray: the configured address, the cluster `ray job submit` runs it in, or a new local Ray."""

from __future__ import annotations

import os
import socket

import ray

from uhlm_ray.config import RuntimeConfig
from uhlm_ray.validation import ConfigError

PROBE_TIMEOUT_S = 5.0


def check_reachable(address: str, *, field: str) -> None:
    """A `host:port` (or `ray://host:port`) address must accept a TCP connection within a few seconds; `ray.init`
    would otherwise retry for minutes before it gives up."""
    host_port = address.split("://", 1)[-1]
    if address in ("local", "auto") or ":" not in host_port:
        return
    host, _, port = host_port.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S):
            return
    except ValueError as err:
        raise ConfigError(f"{field}={address!r}: the port must be a number (host:port)") from err
    except OSError as err:
        raise ConfigError(f"{field}={address!r}: no Ray cluster answers there ({err.strerror or err}); start one "
                          "with `ray start --head`, or leave runtime.address unset for a local Ray") from err


def connect(runtime: RuntimeConfig, *, job: str) -> None:
    """`runtime.address`, else $RAY_ADDRESS (set by `ray job submit`), else "local": never a stale cluster file."""
    address = runtime.address or os.environ.get("RAY_ADDRESS") or "local"
    check_reachable(address, field="runtime.address" if runtime.address else "RAY_ADDRESS")
    ray.init(address=address, log_to_driver=True)  # trial and actor output reaches the console and `ray job logs`
    where = "a new local Ray" if address == "local" else f"the Ray cluster at {address}"
    print(f"[{job}] connected to {where}: {ray.cluster_resources()}")
