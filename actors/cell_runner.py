"""The driver of a cell experiment: device actors in waves, results stored the moment a wave returns.

Prompt p = k * N + i is device i's k-th prompt (example p modulo the set size), so a one-device cell decodes
examples 0, 1, 2, ... exactly as the core loop does. Each actor has at most one wave in flight; a wave is retried by
the restarted actor if the actor dies, and the store (keyed by device and prompt) keeps each prompt once, so an
interrupted or crashed run resumes without losing or double-counting a prompt.
"""

from __future__ import annotations

from collections.abc import Callable

import ray

from actors.device_actor import Assignment, DeviceActor
from uhlm_ray.cell import device_distances
from uhlm_ray.config import EvaluateConfig, config_to_dict
from uhlm_ray.experiments.datasets import Example
from uhlm_ray.experiments.evaluate import ResultStore
from uhlm_ray.measures.similarity import Encoder, response_similarity
from uhlm_ray.records import PromptResult


def cell_assignments(*, cfg: EvaluateConfig, examples: list[Example], drafts: dict[int, int] | None = None
                     ) -> dict[int, list[Assignment]]:
    """Every device's prompts, in the order it decodes them; `drafts`: each device's planned block length."""
    distances = device_distances(cfg.cell)
    n = cfg.cell.n_devices
    out: dict[int, list[Assignment]] = {}
    for device in range(n):
        for k in range(cfg.cell.prompts_per_device):
            p = k * n + device
            example = examples[p % len(examples)]
            out.setdefault(device, []).append(Assignment(
                device_index=device, prompt_index=p, example_id=example.id, reference=example.reference,
                prompt=example.prompt, distance_m=distances[device],
                fixed_drafts=drafts.get(device) if drafts is not None else None))
    return out


def start_device_actors(*, cfg: EvaluateConfig, run: str) -> list[ray.actor.ActorHandle]:
    groups = range(0, cfg.cell.n_devices, cfg.cell.devices_per_actor)
    return [
        DeviceActor.options(
            num_cpus=cfg.runtime.device_actor_num_cpus, resources=dict(cfg.runtime.device_actor_resources) or None,
            max_restarts=cfg.runtime.actor_max_restarts,
            max_task_retries=cfg.runtime.actor_max_restarts,
        ).remote(config_to_dict(cfg), run)
        for g in groups
    ]


def run_cell(
    *,
    cfg: EvaluateConfig,
    examples: list[Example],
    store: ResultStore,
    encoder: Encoder,
    run: str,
    on_result: Callable[[PromptResult], None] | None = None,
    on_wave: Callable[[int, list], None] | None = None,
    drafts: dict[int, int] | None = None,
) -> list[PromptResult]:
    """Decode every device's prompts; returns all results (stored ones included) in (device, prompt) order.
    `drafts`: each device's block length (a Multi-SPIN plan, uhlm_ray/draft_control.py)."""
    method = cfg.cell.method
    done = store.load(method) if cfg.resume else {}
    per_device = cell_assignments(cfg=cfg, examples=examples, drafts=drafts)
    size = cfg.cell.devices_per_actor
    # waves per actor group: wave k holds each device's k-th prompt that is not stored yet
    waves: dict[int, list[list[Assignment]]] = {}
    for g, first in enumerate(range(0, cfg.cell.n_devices, size)):
        devices = range(first, min(first + size, cfg.cell.n_devices))
        todo = {d: [a for a in per_device[d] if (d, a.prompt_index) not in done] for d in devices}
        depth = max((len(v) for v in todo.values()), default=0)
        waves[g] = [[todo[d][k] for d in devices if k < len(todo[d])] for k in range(depth)]

    if any(waves.values()):
        actors = start_device_actors(cfg=cfg, run=run)
        in_flight = {}
        for g, queue in waves.items():
            if queue:
                in_flight[actors[g].run_wave.remote(queue.pop(0))] = g
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            g = in_flight.pop(ready[0])
            wave_results: list[PromptResult] = ray.get(ready[0])
            scores = response_similarity(encoder=encoder, responses=[r.response for r in wave_results],
                                         references=[r.reference for r in wave_results])
            for result, score in zip(wave_results, scores, strict=True):
                key = (result.device_index, result.prompt_index)
                if key in done:
                    continue  # a retried wave can only repeat what is stored: keep the first
                result.similarity = float(score)
                store.append(result)
                done[key] = result
                if on_result is not None:
                    on_result(result)
            if waves[g]:
                in_flight[actors[g].run_wave.remote(waves[g].pop(0))] = g
            if on_wave is not None:
                on_wave(g, actors)
        for actor in actors:
            ray.kill(actor)
    wanted = [(d, a.prompt_index) for d, assignments in per_device.items() for a in assignments]
    return [done[k] for k in wanted]
