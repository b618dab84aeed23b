"""Sustained load on the verifier's HTTP route: simulated devices on loopback, undisturbed and with a replica killed.

    .venv/bin/python bench/verifier_load.py [--devices 64] [--seconds 60] [--replicas 2] [--tiny] [overrides...]

A local Ray with the Serve verifier (`--replicas` replicas, session-affine routing); `--devices` simulated devices,
each an asyncio task that opens a session with a random prompt and sends blocks of `--drafts` random draft ids
(the `ids` payload) to POST /verifier/v1/sessions/{id}/block with its `x-session-id` header, one round at a time,
following the protocol (the tokens the verifier has not seen, then the drafts), and opens a new session after
`--tokens` tokens. Runs twice, `--seconds` each, bounded in requests (`--max-requests`): undisturbed, then with one
replica killed at `--kill-at` seconds. A device whose session is lost (404) reopens it with its prompt and every
token so far and retries the round, as the core loop does; a refused (503) or broken call is retried after a pause;
a round that cannot complete within `--patience` seconds counts as failed. `--tiny` serves a tiny random-weight
pair (mechanics), otherwise the configured LLM (the embedded 1.5B by default). Then an overload burst: far more
concurrent rounds than the deployment queues (`runtime.max_queued_requests`), to show they are refused at once
(503) rather than left hanging.

Prints, per run: rounds done and failed, retries by cause, p50 / p99 round latency, the verifier batch sizes that
formed, emitted tokens per second, and rounds per replica.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import aiohttp  # noqa: E402
import numpy as np  # noqa: E402
import ray  # noqa: E402
from ray import serve  # noqa: E402

from actors.verifier_deployment import APP_NAME, start_verifier  # noqa: E402
from uhlm_ray.config import load_config  # noqa: E402
from uhlm_ray.models.tiny import WORDS, save_tiny_model  # noqa: E402


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)
    replicas: Counter = field(default_factory=Counter)
    retries: Counter = field(default_factory=Counter)
    failed: int = 0
    tokens: int = 0
    requests: int = 0


class Device:
    """One simulated device: sessions of `--tokens` tokens, one round at a time, rebuilt when lost."""

    def __init__(self, *, index: int, base: str, args, vocab: int, stats: Stats) -> None:
        self.index, self.base, self.args, self.vocab, self.stats = index, base, args, vocab, stats
        self.rng = random.Random(index)

    async def run(self, deadline: float) -> None:
        # a round trip that takes longer than this is abandoned and retried (reopen first)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.args.request_timeout)) as self.http:
            run = 0
            while time.monotonic() < deadline and self.stats.requests < self.args.max_requests:
                run += 1
                if not await self.session(f"load-{self.index}-{run}", deadline):
                    return

    async def open(self) -> bool:
        body = {"session_id": self.sid, "prompt_token_ids": self.prompt + self.tokens[:self.seen], "seed": self.index}
        try:
            async with self.http.post(f"{self.base}/v1/sessions", json=body, headers=self.headers) as reply:
                return reply.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def session(self, sid: str, deadline: float) -> bool:
        """One session to its last token; False when it could not even be opened."""
        self.sid, self.headers = sid, {"x-session-id": sid}
        self.prompt = [self.rng.randrange(2, self.vocab) for _ in range(self.args.prompt_tokens)]
        self.tokens, self.seen = [], 0  # the response so far, and how much of it the verifier has processed
        while not await self.open():
            self.stats.retries["open"] += 1
            await asyncio.sleep(0.5)
            if time.monotonic() > deadline + self.args.patience:
                self.stats.failed += 1
                return False
        for round_index in range(1, self.args.tokens + 1):
            if time.monotonic() >= deadline or self.stats.requests >= self.args.max_requests or \
                    len(self.tokens) >= self.args.tokens:
                break
            if not await self.round(round_index):
                break
        try:
            async with self.http.delete(f"{self.base}/v1/sessions/{sid}", headers=self.headers):
                pass
        except (aiohttp.ClientError, TimeoutError):
            pass
        return True

    async def round(self, round_index: int) -> bool:
        """One block round, retried until it completes or `--patience` runs out (then it counts as failed)."""
        body = {"round": round_index, "new_token_ids": self.tokens[self.seen:], "payload": {"format": "ids"},
                "draft_token_ids": [self.rng.randrange(2, self.vocab) for _ in range(self.args.drafts)]}
        started, answer = time.monotonic(), None
        while answer is None and time.monotonic() - started < self.args.patience:
            try:
                async with self.http.post(f"{self.base}/v1/sessions/{self.sid}/block", json=body,
                                          headers=self.headers) as reply:
                    if reply.status == 200:
                        answer = await reply.json()
                    elif reply.status == 404:  # lost with its replica: rebuild it, retry the round
                        self.stats.retries["session lost (404)"] += 1
                        await self.open()
                    else:
                        self.stats.retries[f"HTTP {reply.status}"] += 1
                        await asyncio.sleep(0.5)
            except (aiohttp.ClientError, TimeoutError) as err:
                self.stats.retries[type(err).__name__] += 1
                await asyncio.sleep(0.5)
                await self.open()
        if answer is None:
            self.stats.failed += 1
            return False
        self.stats.requests += 1
        self.stats.latencies.append(time.monotonic() - started)
        self.stats.batches.append(answer["batch_size"])
        self.stats.replicas[answer["replica"]] += 1
        self.stats.tokens += len(answer["token_ids"])
        self.seen = len(self.tokens) + answer["num_accepted"]
        self.tokens += answer["token_ids"]
        return True


def wait_for_replicas(count: int, *, timeout_s: float = 300.0) -> float:
    """Block until `count` replicas run again (the replacement for a killed one); the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        states = [d.replica_states for d in serve.status().applications[APP_NAME].deployments.values()]
        if sum(s.get("RUNNING", 0) for s in states) >= count and all(set(s) <= {"RUNNING"} for s in states):
            return time.monotonic() - start
        time.sleep(0.5)
    raise TimeoutError(f"the verifier did not get back to {count} running replicas in {timeout_s:.0f} s")


def kill_a_replica() -> str:
    name = next(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if "SERVE_REPLICA" in a["name"])
    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
    return name


async def load(*, base: str, args, vocab: int, kill_at: float | None) -> tuple[Stats, float]:
    stats = Stats()
    start = time.monotonic()
    deadline = start + args.seconds
    tasks = [asyncio.create_task(Device(index=i, base=base, args=args, vocab=vocab, stats=stats).run(deadline))
             for i in range(args.devices)]
    if kill_at is not None:
        async def kill() -> None:
            await asyncio.sleep(kill_at)
            # Ray's blocking calls stay off the event loop the devices run on
            print(f"[load] killed replica {await asyncio.to_thread(kill_a_replica)} at "
                  f"{time.monotonic() - start:.0f} s", flush=True)

        killer = asyncio.create_task(kill())
    while not all(t.done() for t in tasks):
        await asyncio.wait(tasks, timeout=5)
        print(f"[load] {time.monotonic() - start:.0f} s: {stats.requests} rounds, {stats.failed} failed, "
              f"retries {dict(stats.retries)}", flush=True)
    if kill_at is not None:
        await killer
    return stats, time.monotonic() - start


async def overload(*, base: str, bound: int, vocab: int) -> tuple[Counter, float]:
    """Far more concurrent rounds than the deployment queues: each answered at once, 200 or 503, none hangs."""
    sessions = 2 * bound
    # no client-side connection cap (aiohttp's default is 100): every round must reach the server at once
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300),
                                     connector=aiohttp.TCPConnector(limit=0)) as http:
        opening = asyncio.Semaphore(32)  # opened a few at a time: the burst is the rounds, not the opens

        async def open_one(i: int) -> None:
            async with opening, http.post(f"{base}/v1/sessions", headers={"x-session-id": f"burst-{i}"},
                                          json={"session_id": f"burst-{i}", "prompt_token_ids": [2, 3, 4]}) as reply:
                assert reply.status == 200, await reply.text()

        await asyncio.gather(*[open_one(i) for i in range(sessions)])
        start = time.monotonic()

        async def one(i: int) -> int:
            body = {"round": 1, "draft_token_ids": [i % (vocab - 2) + 2], "payload": {"format": "ids"}}
            async with http.post(f"{base}/v1/sessions/burst-{i}/block", json=body,
                                 headers={"x-session-id": f"burst-{i}"}) as reply:
                return reply.status

        statuses = Counter(await asyncio.gather(*[one(i) for i in range(sessions)]))
        return statuses, time.monotonic() - start


def report(label: str, stats: Stats, seconds: float) -> str:
    lat = np.array(stats.latencies) if stats.latencies else np.array([np.nan])
    batches = Counter(stats.batches)
    return (f"| {label} | {stats.requests} | {stats.failed} | "
            f"{', '.join(f'{k} {v}' for k, v in sorted(stats.retries.items())) or '-'} | "
            f"{np.percentile(lat, 50) * 1e3:.0f} | {np.percentile(lat, 99) * 1e3:.0f} | "
            f"{statistics.mean(stats.batches) if stats.batches else float('nan'):.1f} "
            f"(max {max(batches, default=0)}) | "
            f"{stats.tokens / seconds:.1f} | {', '.join(str(v) for v in stats.replicas.values())} |")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--kill-at", type=float, default=30.0)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--drafts", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=24)
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--patience", type=float, default=120.0)
    parser.add_argument("--request-timeout", type=float, default=60.0)
    parser.add_argument("--tiny", action="store_true", help="serve a tiny random-weight pair")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    model = []
    if args.tiny:
        folder = Path(tempfile.mkdtemp(prefix="tiny-pair-"))
        save_tiny_model(folder / "llm", words=WORDS, layers=3, hidden=48, seed=2)
        model = ["model.pair=custom", f"model.slm={folder / 'llm'}", f"model.llm={folder / 'llm'}",
                 "model.dtype=float32"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = load_config(overrides=[*model, f"runtime.verifier_replicas={args.replicas}", f"runtime.http_port={port}",
                                 "runtime.max_batch_size=16", *args.overrides])
    ray.init(address="local", log_to_driver=False, include_dashboard=False)
    start_verifier(cfg)
    base = f"http://127.0.0.1:{port}/verifier"
    vocab = _vocab(base)
    rows = []
    for label, kill in (("undisturbed", None), (f"one replica killed at {args.kill_at:.0f} s", args.kill_at)):
        print(f"[load] {label}: {args.devices} devices for {args.seconds:.0f} s ...", flush=True)
        stats, seconds = asyncio.run(load(base=base, args=args, vocab=vocab, kill_at=kill))
        rows.append(report(label, stats, seconds))
        print(f"[load] {rows[-1]}", flush=True)  # kept even if the burst below is interrupted
        # the burst and the next run start on a full set of replicas, so the hash ring is stable under them
        waited = wait_for_replicas(args.replicas)
        print(f"[load] {args.replicas} replicas running again after {waited:.0f} s", flush=True)
    bound = cfg.runtime.max_queued_requests + args.replicas * (cfg.runtime.max_ongoing_requests
                                                                or 2 * cfg.runtime.max_batch_size)
    statuses, burst_s = asyncio.run(overload(base=base, bound=bound, vocab=vocab))
    serve.delete(APP_NAME)
    ray.shutdown()

    print(f"\n{'tiny random-weight pair' if args.tiny else cfg.model.pair} verifier, {args.replicas} replicas, "
          f"batches up to {cfg.runtime.max_batch_size}; {args.devices} devices x {args.drafts} draft ids a round")
    print("| run | rounds done | rounds failed | retries | p50 ms | p99 ms | batch mean (max) | tokens/s | "
          "rounds per replica |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---|")
    print("\n".join(rows))
    print(f"\nOverload: {2 * bound} concurrent rounds against a bound of {bound} (queued "
          f"{cfg.runtime.max_queued_requests} + ongoing {bound - cfg.runtime.max_queued_requests}): statuses "
          f"{dict(statuses)}, all answered in {burst_s:.1f} s")
    return 0


def _vocab(base: str) -> int:
    import requests

    return requests.get(f"{base}/v1/health", timeout=60).json()["vocab_size"]


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
