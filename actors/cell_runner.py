"""The driver of a cell experiment: each device actor streams its prompts' results, stored the moment each ends.

Prompt p = k * N + i is device i's k-th prompt (example p modulo the set size), so a one-device cell decodes
examples 0, 1, 2, ... exactly as the core loop does. Each actor gets all its devices' prompts in one call, k-th
prompts first, and decodes as many at once as it has devices, a finished prompt's place going to the next
(`Slots`): no prompt waits for the longest of a wave. Which prompts share a batch changes no draw (each is keyed
by device, prompt and round), and a device's rounds are laid on its own timeline afterwards (uhlm_ray/cell.py), so
a device's next prompt may start before its last one ends. If an actor dies, the restarted actor is handed the
prompts not yet stored, and the store (keyed by device and prompt) keeps each prompt once, so an interrupted or
crashed run resumes without losing or double-counting a prompt.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import ray
from ray.exceptions import RayActorError

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


def group_prompts(*, cfg: EvaluateConfig, per_device: dict[int, list[Assignment]],
                  done: dict[tuple[int, int], PromptResult]) -> tuple[dict[int, list[Assignment]], dict[int, int]]:
    """Per actor group: its devices' prompts not stored yet, every device's k-th before any (k+1)-th, and how many
    devices it holds (the width of its lockstep batch)."""
    size = cfg.cell.devices_per_actor
    todo: dict[int, list[Assignment]] = {}
    width: dict[int, int] = {}
    for g, first in enumerate(range(0, cfg.cell.n_devices, size)):
        devices = range(first, min(first + size, cfg.cell.n_devices))
        depth = max(len(per_device[d]) for d in devices)
        todo[g] = [per_device[d][k] for k in range(depth) for d in devices
                   if k < len(per_device[d]) and (d, per_device[d][k].prompt_index) not in done]
        width[g] = len(devices)
    return todo, width


def stream_results(*, cfg: EvaluateConfig, actors: list[ray.actor.ActorHandle], todo: dict[int, list[Assignment]],
                   width: dict[int, int], done: dict[tuple[int, int], PromptResult]
                   ) -> Iterator[tuple[int, PromptResult]]:
    """(group, result) for each prompt an actor group finishes, as it finishes. The caller stores each result in
    `done` before asking for the next: a group whose actor died is handed, once Ray has restarted it, the prompts
    `done` does not hold yet. An actor that cannot come back (its __init__ failed, its restarts are spent, or it is
    gone for good) raises its RayActorError."""
    restarts = dict.fromkeys(todo, 0)

    def pending(g: int) -> list[Assignment]:  # the group's prompts not stored yet
        return [a for a in todo[g] if (a.device_index, a.prompt_index) not in done]

    def stream(g: int):  # those prompts, to the group's actor (restarted or not)
        return actors[g].run_prompts.remote(left, width[g]) if (left := pending(g)) else None

    streams = {s: g for g in todo if (s := stream(g)) is not None}
    while streams:
        ready, _ = ray.wait(list(streams), num_returns=1)
        g = streams[ready[0]]
        try:
            result: PromptResult = ray.get(next(ready[0]))
        except StopIteration:
            del streams[ready[0]]
            continue
        except RayActorError as err:
            del streams[ready[0]]
            restarts[g] += 1
            if err.actor_init_failed or 0 <= cfg.runtime.actor_max_restarts < restarts[g]:
                raise
            try:  # waits while Ray restarts the actor; fails at once if it is gone for good
                ray.get(actors[g].pid.remote())
            except RayActorError:
                raise err from None
            print(f"[cell] device actor {g} died ({type(err).__name__}); its {len(pending(g))} prompts not "
                  f"stored yet go to the restarted actor (restart {restarts[g]})", file=sys.stderr, flush=True)
            if (s := stream(g)) is not None:
                streams[s] = g
            continue
        yield g, result


def run_cell(
    *,
    cfg: EvaluateConfig,
    examples: list[Example],
    store: ResultStore,
    encoder: Encoder,
    run: str,
    on_result: Callable[[PromptResult], None] | None = None,
    on_stored: Callable[[int, list], None] | None = None,
    drafts: dict[int, int] | None = None,
) -> list[PromptResult]:
    """Decode every device's prompts; returns all results (stored ones included) in (device, prompt) order.
    `drafts`: each device's block length (a Multi-SPIN plan, uhlm_ray/draft_control.py). `on_stored(group,
    actors)` hears of each prompt an actor group finished, once it is stored."""
    method = cfg.cell.method
    done = store.load(method) if cfg.resume else {}
    per_device = cell_assignments(cfg=cfg, examples=examples, drafts=drafts)
    todo, width = group_prompts(cfg=cfg, per_device=per_device, done=done)
    if any(todo.values()):
        actors = start_device_actors(cfg=cfg, run=run)
        try:
            for g, result in stream_results(cfg=cfg, actors=actors, todo=todo, width=width, done=done):
                key = (result.device_index, result.prompt_index)
                if key in done:
                    continue  # a prompt decoded again after a crash repeats what is stored: keep the first
                result.similarity = float(response_similarity(encoder=encoder, responses=[result.response],
                                                              references=[result.reference])[0])
                store.append(result)
                done[key] = result
                if on_result is not None:
                    on_result(result)
                if on_stored is not None:
                    on_stored(g, actors)
        finally:  # an actor's error ends the run: the others stop too
            for actor in actors:
                ray.kill(actor)
    wanted = [(d, a.prompt_index) for d, assignments in per_device.items() for a in assignments]
    missing = [k for k in wanted if k not in done]
    if missing:  # a stream ended without them: never silently
        raise RuntimeError(f"the device actors ended without {len(missing)} (device, prompt) results, e.g. "
                           f"{missing[:3]}")
    return [done[k] for k in wanted]
