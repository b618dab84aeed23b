"""Free local ports for tests that start Ray heads, Serve proxies and dashboards on fixed ports."""

from __future__ import annotations

import random
import socket
from pathlib import Path

RAY_WORKER_PORTS_END = 19999  # Ray's default worker ports are 10002-19999


def free_port() -> int:
    """A free 127.0.0.1 port between Ray's worker ports and the kernel's ephemeral range. A port the kernel hands
    out for port 0 is an ephemeral one, which any outgoing connection (Ray opens many) can take as its local end
    before the server binds it: that failed once as "Failed to bind to address '127.0.0.1:52639'"."""
    bounds = Path("/proc/sys/net/ipv4/ip_local_port_range")
    ephemeral = int(bounds.read_text().split()[0]) if bounds.exists() else 32768
    for port in random.Random().sample(range(RAY_WORKER_PORTS_END + 1, ephemeral), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {RAY_WORKER_PORTS_END + 1}..{ephemeral - 1} after 200 tries")
