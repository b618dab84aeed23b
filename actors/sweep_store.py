"""What a sweep's trials share and hand back, held on the driver's node whatever node a trial runs on.

A Tune trial may run on any node of the cluster, where the driver's folders do not exist. So a trial never writes a
file that the sweep's results depend on: the decoded prompts every trial shares, and the per-round records each
trial hands back, go through `SweepStore`, a Ray actor pinned to the driver's node, which keeps them in the sweep's
folder there (so an interrupted sweep resumes from them). MLflow is written by the driver alone (jobs/sweep.py).
Only the shared forward passes stay on each node (a node-local folder): they change no result, only time.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from uhlm_ray.experiments.evaluate import ResultStore
from uhlm_ray.records import PromptResult


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class SweepStore:
    """The sweep folder's `shared/` (decoded prompts, one ResultStore per method key) and `artifacts/` (each
    trial's records), on the driver's node. Calls are served one at a time, so appends never interleave."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def load(self, name: str, method: str) -> dict[tuple[int, int], PromptResult]:
        return ResultStore(self.folder / "shared" / name).load(method)

    def append(self, name: str, result: PromptResult) -> None:
        ResultStore(self.folder / "shared" / name).append(result)

    def put_artifact(self, trial_key: str, filename: str, data: bytes) -> None:
        """Keep a trial's file for the driver to log; written atomically, so a resumed sweep never sees half."""
        folder = self.folder / "artifacts" / trial_key
        folder.mkdir(parents=True, exist_ok=True)
        # the partial file beside the folder, not in it: the driver logs the whole folder as the run's records
        fd, tmp = tempfile.mkstemp(dir=folder.parent, prefix=f".{trial_key}-", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, folder / filename)


def start_sweep_store(folder: Path) -> ray.actor.ActorHandle:
    """The store on this (the driver's) node: its folder is the driver's."""
    here = ray.get_runtime_context().get_node_id()
    return SweepStore.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False)).remote(
        str(folder))


class RemoteStoreView:
    """One method key's part of the shared store, as `run_method` uses a ResultStore (load, append)."""

    def __init__(self, store: ray.actor.ActorHandle, name: str) -> None:
        self.store, self.name = store, name

    def load(self, method: str) -> dict[tuple[int, int], PromptResult]:
        return ray.get(self.store.load.remote(self.name, method))

    def append(self, result: PromptResult) -> None:
        ray.get(self.store.append.remote(self.name, result))
