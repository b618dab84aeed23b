"""The LLM verifier as a Ray Serve deployment: batched verification, one KV cache per device session, an HTTP route.

Devices call it through a DeploymentHandle (`ServeVerifierClient`); other programs can use the JSON route described
in actors/http_schema.py. `app` is the Serve application builder (`serve run actors.verifier_deployment:app k=v ...`,
serve_config.yaml); jobs deploy it with `start_verifier`. Requests that arrive together are verified in one batched
forward pass (`@serve.batch`); `max_ongoing_requests` is kept at least the batch size so that batches can fill.
"""


import asyncio
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path

import ray
import torch
import yaml
from fastapi import FastAPI, Header, HTTPException
from ray import serve
from ray.serve import Application
from ray.serve.config import RequestRouterConfig

from actors import http_limits
from actors.http_schema import (
    MAX_BODY_BYTES,
    Block,
    BlockAnswer,
    FieldError,
    OpenSession,
    Verify,
    VerifyAnswer,
    session_key,
    to_block_request,
    to_request,
)
from uhlm_ray.base_station.verifier import Verifier
from uhlm_ray.config import (
    EvaluateConfig,
    RuntimeConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    validate_config,
)
from uhlm_ray.models.loading import load_model, resolve_dtype
from uhlm_ray.models.presets import resolve_pair
from uhlm_ray.protocol import (
    BlockRequest,
    BlockResult,
    Reopen,
    Scored,
    SessionError,
    UnknownSession,
    VerifyRequest,
    VerifyResult,
)
from uhlm_ray.sampling.rng import SessionKey
from uhlm_ray.validation import ConfigError

APP_NAME = "uhlm-verifier"
DEPLOYMENT_NAME = "VerifierDeployment"
# a session's requests go to the replica holding its KV cache: a consistent hash of the session id (the handle's
# session_id option, the x-session-id header on HTTP), strictly (no fallback: a moved session would be rebuilt)
SESSION_ROUTER = "ray.serve.experimental.consistent_hash_router.ConsistentHashRouter"

# the HTTP route's FastAPI object; `app` below is the Serve application builder that `serve run` and serve configs name
http_app = FastAPI(title="uhlm_ray verifier", description="Speculative verification of SLM drafts by the LLM.")
http_limits.install(http_app, max_body_bytes=MAX_BODY_BYTES)


def _field_error(err: FieldError) -> HTTPException:
    return HTTPException(status_code=422, detail=[{"loc": list(err.loc), "msg": str(err), "type": "value_error"}])


def _not_open(err: SessionError, *, session_id: str, header: str | None) -> HTTPException:
    """404 for a session this replica does not hold; the client reopens it (prompt and response so far) and
    retries. Without the routing header a session's calls may reach a replica that never held it."""
    hint = "" if header == session_id else \
        f"; send the header x-session-id: {session_id} on every call so they all reach the replica that holds it"
    return HTTPException(status_code=404, detail=f"{err}{hint}")


def _raise_any(results: list) -> list:
    for result in results:
        if isinstance(result, Exception):
            raise result
    return list(results)


@serve.deployment(name=DEPLOYMENT_NAME)
@serve.ingress(http_app)
class VerifierDeployment:
    def __init__(self, config: dict) -> None:
        cfg = config_from_dict(config)
        device = cfg.runtime.verifier_device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("runtime.verifier_device='cuda': this replica sees no GPU (CUDA_VISIBLE_DEVICES="
                              f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}, torch {torch.__version__}); give the "
                              "verifier a GPU node or set runtime.verifier_device=auto")
        if cfg.model.num_threads is not None:
            torch.set_num_threads(cfg.model.num_threads)
        _, llm_source = resolve_pair(cfg.model)
        self.model = load_model(llm_source, dtype=resolve_dtype(cfg.model.dtype, device=device), device=device,
                                linear_backend=cfg.model.linear_backend, batch_invariant=cfg.model.batch_invariant)
        self.device = device
        self.core = Verifier(model=self.model, max_sessions=cfg.runtime.max_sessions,
                             fuse_prefill=cfg.runtime.fuse_llm_prefill)
        self.replica = serve.get_replica_context().replica_tag
        self.max_batch_size = cfg.runtime.max_batch_size
        for batched in (self._verify_batch, self._block_batch):
            batched.set_max_batch_size(cfg.runtime.max_batch_size)
            batched.set_batch_wait_timeout_s(cfg.runtime.batch_wait_timeout_s)

    # --- the handle API (Python objects inside the Ray cluster) ---

    def info(self) -> dict:
        return {"vocab_size": self.core.vocab_size, "eos_token_ids": sorted(self.model.eos_token_ids),
                "sessions": self.core.num_sessions, "rounds_verified": self.core.rounds_verified,
                "max_batch_size": self.max_batch_size, "device": self.device,
                "node_id": ray.get_runtime_context().get_node_id(), "replica": self.replica}

    def sessions(self) -> dict:
        """This replica's open sessions and the rounds each has verified (handle API only: ids are not for HTTP)."""
        return {"replica": self.replica, "rounds": self.core.session_rounds()}

    async def open(self, session_id: str, prompt_ids: list[int], key: SessionKey) -> float:
        return await asyncio.to_thread(self.core.open, session_id=session_id, prompt_ids=prompt_ids, key=key)

    async def verify(self, request: VerifyRequest) -> VerifyResult:
        """One device session's draft; requests that arrive together (from many devices) share a batched pass."""
        return _raise_any([await self._verify_batch(request)])[0]

    async def verify_block(self, request: BlockRequest) -> BlockResult:
        """One device session's block; blocks of different lengths from many devices share one padded pass."""
        return _raise_any([await self._block_batch(request)])[0]

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _verify_batch(self, requests: list[VerifyRequest]) -> list[VerifyResult | Exception]:
        return await asyncio.to_thread(self._verify_valid, requests, self.core.verify)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _block_batch(self, requests: list[BlockRequest]) -> list[BlockResult | Exception]:
        return await asyncio.to_thread(self._verify_valid, requests, self.core.verify_blocks)

    def _verify_valid(self, requests: list, verify) -> list:
        """One bad request (an unknown session, a session twice) fails alone, not its whole batch."""
        out: list[VerifyResult | Exception | None] = [None] * len(requests)
        seen: set[str] = set()
        good = []
        for i, r in enumerate(requests):
            if r.session_id in seen:
                out[i] = SessionError(f"session {r.session_id!r} has a verification in flight already")
            else:
                seen.add(r.session_id)
                good.append(i)
        try:
            for i, result in zip(good, verify([requests[i] for i in good]), strict=True):
                result.replica = self.replica
                out[i] = result
        except SessionError:  # isolate the unknown session(s) and verify the rest
            for i in good:
                try:
                    (out[i],) = verify([requests[i]])
                    out[i].replica = self.replica
                except SessionError as err:
                    out[i] = err
        return out

    async def score(self, session_id: str, new_tokens: list[int], position: int | None = None) -> Scored:
        return await asyncio.to_thread(self.core.score, session_id=session_id, new_tokens=new_tokens,
                                       position=position)

    async def close(self, session_id: str) -> bool:
        return await asyncio.to_thread(self.core.close, session_id=session_id)

    # --- the HTTP route (JSON only) ---

    @http_app.get("/v1/health")
    def http_health(self) -> dict:
        return self.info()

    @http_app.post("/v1/sessions")
    async def http_open(self, body: OpenSession) -> dict:
        bad = [t for t in body.prompt_token_ids if t >= self.core.vocab_size]
        if bad:
            raise _field_error(FieldError(("body", "prompt_token_ids"),
                                          f"token id {bad[0]} is outside [0, {self.core.vocab_size - 1}]"))
        try:
            prefill_s = await self.open(body.session_id, list(body.prompt_token_ids), session_key(body))
        except SessionError as err:
            raise HTTPException(status_code=429, detail=str(err)) from err
        return {"session_id": body.session_id, "prefill_s": prefill_s}

    @http_app.post("/v1/sessions/{session_id}/verify")
    async def http_verify(self, session_id: str, body: Verify,
                          x_session_id: str | None = Header(default=None)) -> VerifyAnswer:
        try:
            request = to_request(session_id=session_id, body=body, vocab_size=self.core.vocab_size)
        except FieldError as err:
            raise _field_error(err) from err
        try:
            r = await self.verify(request)
        except SessionError as err:
            raise _not_open(err, session_id=session_id, header=x_session_id) from err
        return VerifyAnswer(token_id=r.token, accepted=r.accepted, resampled=r.resampled, y_d=r.y_d, beta=r.beta,
                            tau_llm_s=r.tau_llm_s, catch_up_tokens=r.catch_up_tokens, batch_size=r.batch_size,
                            new_token_probs=r.new_token_probs, replica=r.replica)

    @http_app.post("/v1/sessions/{session_id}/block")
    async def http_block(self, session_id: str, body: Block,
                         x_session_id: str | None = Header(default=None)) -> BlockAnswer:
        try:
            request = to_block_request(session_id=session_id, body=body, vocab_size=self.core.vocab_size)
        except FieldError as err:
            raise _field_error(err) from err
        try:
            r = await self.verify_block(request)
        except SessionError as err:
            raise _not_open(err, session_id=session_id, header=x_session_id) from err
        return BlockAnswer(token_ids=r.tokens, num_accepted=r.num_accepted, recovered=r.recovered, bonus=r.bonus,
                           y_d=r.y_d, accept_prob=r.accept_prob, tau_llm_s=r.tau_llm_s, pass_tokens=r.pass_tokens,
                           batch_size=r.batch_size, new_token_probs=r.new_token_probs, replica=r.replica)

    @http_app.delete("/v1/sessions/{session_id}")
    async def http_close(self, session_id: str) -> dict:
        return {"closed": await self.close(session_id)}


def verifier_app(cfg: EvaluateConfig) -> Application:
    """The deployment bound to a config: its replicas (fixed, or autoscaled), session-affine routing, placement,
    batching, and the queue bound beyond which callers get a clear refusal (HTTP 503) instead of waiting."""
    runtime = cfg.runtime
    actor_options: dict = {"num_cpus": 1}
    if runtime.verifier_num_gpus > 0:
        actor_options["num_gpus"] = runtime.verifier_num_gpus
    if runtime.verifier_resources:
        actor_options["resources"] = dict(runtime.verifier_resources)
    ongoing = runtime.max_ongoing_requests or 2 * runtime.max_batch_size
    scaling: dict = ({"autoscaling_config": dict(runtime.verifier_autoscaling)} if runtime.verifier_autoscaling
                     else {"num_replicas": runtime.verifier_replicas})
    return VerifierDeployment.options(
        ray_actor_options=actor_options, max_ongoing_requests=ongoing, max_queued_requests=runtime.max_queued_requests,
        request_router_config=RequestRouterConfig(request_router_class=SESSION_ROUTER,
                                                  request_router_kwargs={"num_fallback_replicas": 0}),
        **scaling,
    ).bind(config_to_dict(cfg))


def check_verifier_placement(runtime: RuntimeConfig) -> None:
    """Refuse, before deploying, a verifier that cannot be placed: a replica's failure to start otherwise shows up
    only as "Deploying application failed", with the cause in the replica's log."""
    wanted = {"GPU": runtime.verifier_num_gpus, **runtime.verifier_resources}
    total = ray.cluster_resources()
    for name, amount in wanted.items():
        if amount > 0 and total.get(name, 0.0) < amount:
            field = "runtime.verifier_num_gpus" if name == "GPU" else f"runtime.verifier_resources.{name}"
            raise ConfigError(f"{field}={amount}: the Ray cluster offers {total.get(name, 0.0):g} {name} "
                              f"(cluster resources: {sorted(total)})")


def verifier_url() -> str:
    """The verifier's real HTTP address: Serve keeps the host and port it was first started with.

    Private API on purpose: Ray 2.60 has no public call that returns the running proxies' HTTP options in process
    (`serve.status()` lists proxies and applications only; `serve config` / the REST details need the dashboard)."""
    from ray.serve.context import _get_global_client

    http = _get_global_client().http_config
    return f"http://{http.host}:{http.port}/verifier"


def start_verifier(cfg: EvaluateConfig) -> serve.handle.DeploymentHandle:
    """Start Serve on the configured loopback address (unless already running) and deploy the verifier."""
    validate_config(cfg)  # fail here, naming the field, rather than inside a replica
    check_verifier_placement(cfg.runtime)
    serve.start(http_options={"host": cfg.runtime.http_host, "port": cfg.runtime.http_port})
    return serve.run(verifier_app(cfg), name=APP_NAME, route_prefix="/verifier")


def _override_value(value: object) -> str:
    """An `args:` value as omegaconf override text: `serve run k=v` passes strings, a serve config's YAML may pass
    numbers, booleans, null, lists or mappings, written here in the flow syntax omegaconf's overrides parse."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return yaml.safe_dump(value, default_flow_style=True, width=2**16).strip()
    return json.dumps(value)  # true / false / null / numbers, as YAML spells them


def config_from_args(*, args: Mapping[str, object]) -> EvaluateConfig:
    """The verifier's config from Serve application args: `config` names a YAML file (as a job's `--config`; on a
    cluster a path that exists where the app is built), every other key is a dotted override (`model.pair=...`).
    The project's own loader does the work, so a bad arg fails here as a ConfigError naming the field."""
    overrides = dict(args)
    yaml_path = overrides.pop("config", None)
    if yaml_path is not None and not Path(str(yaml_path)).is_file():  # the loader would blame `--config`
        raise ConfigError(f"config={yaml_path}: no such file where the application is built (cwd {Path.cwd()})")
    cfg = load_config(overrides=[f"{key}={_override_value(value)}" for key, value in overrides.items()],
                      yaml_path=None if yaml_path is None else str(yaml_path))
    resolve_pair(cfg.model)  # validate_config does not check the pair; a replica would fail on it, far from here
    return cfg


def app(args: dict[str, object]) -> Application:
    """The Serve application builder: `serve run actors.verifier_deployment:app model.pair=...`, and the
    `import_path` / `args` of serve_config.yaml (`serve run` / `serve deploy`). Ray calls it with one positional
    dict (its builder contract), so this signature cannot be keyword-only."""
    cfg = config_from_args(args=args)
    # on a cluster (serve deploy, a config file) refuse what cannot be placed; `serve run module:app` builds before
    # it connects, and connecting here would start a Ray of its own
    if ray.is_initialized():
        check_verifier_placement(cfg.runtime)
    return verifier_app(cfg)


# what a lost replica or a moved session looks like to a caller: the round is retried after a reopen
SESSION_LOST = (UnknownSession, ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


class ServeVerifierClient:
    """The core loop's VerifierClient over a DeploymentHandle.

    Every call carries its device session's id (`handle.options(session_id=...)`), so with several replicas Serve's
    consistent-hash router sends a session to the replica that holds its KV cache, and each request is its own call,
    batched at the replica with whatever else arrives. A session the replica does not hold (lost with a dead
    replica, or moved by the router) is rebuilt, not failed: the caller's `reopen` opens it again with its prompt
    and the response so far, and the round is retried; its draws are keyed by round, so the tokens do not change.
    """

    patience_s = 180.0  # how long a round retries a lost session before it fails

    def __init__(self, handle: serve.handle.DeploymentHandle | None = None) -> None:
        self.handle = handle or serve.get_deployment_handle(DEPLOYMENT_NAME, app_name=APP_NAME)
        self.rebuilt = 0  # sessions reopened after a loss

    def _session(self, session_id: str):
        return self.handle.options(session_id=session_id)

    def info(self) -> dict:
        return self.handle.info.remote().result()

    def open(self, *, session_id: str, prompt_ids: list[int], key: SessionKey) -> float:
        for pause in self._pauses():  # the replica the router picks may have just died: wait for its successor
            try:
                return self._session(session_id).open.remote(session_id, prompt_ids, key).result()
            except SESSION_LOST:
                time.sleep(pause)
        raise RuntimeError(f"verifier: no replica took session {session_id!r} within {self.patience_s:.0f} s")

    def verify(self, requests: list[VerifyRequest], *, reopen: Reopen | None = None) -> list[VerifyResult]:
        return self._round(requests, method="verify", reopen=reopen)

    def verify_blocks(self, requests: list[BlockRequest], *, reopen: Reopen | None = None) -> list[BlockResult]:
        return self._round(requests, method="verify_block", reopen=reopen)

    def _round(self, requests: list, *, method: str, reopen: Reopen | None) -> list:
        results: list = [None] * len(requests)
        todo = list(range(len(requests)))
        for pause in self._pauses():
            calls = {i: getattr(self._session(requests[i].session_id), method).remote(requests[i]) for i in todo}
            lost = []
            for i, call in calls.items():
                try:
                    results[i] = call.result()
                except SESSION_LOST:
                    if reopen is None:
                        raise
                    lost.append(i)
            if not lost:
                return results
            time.sleep(pause)
            for i in lost:  # a session that cannot be reopened yet fails again and is reopened next time
                self._reopen(reopen, requests[i].session_id)
            todo = lost
        raise RuntimeError(f"verifier: sessions {[requests[i].session_id for i in todo]} still lost after "
                           f"{self.patience_s:.0f} s: no replica could take them")

    def _pauses(self):
        """Waits between attempts, growing, until `patience_s` is spent (a replaced replica loads its model)."""
        deadline, pause = time.monotonic() + self.patience_s, 0.25
        while time.monotonic() < deadline:
            yield pause
            pause = min(2 * pause, 4.0)

    def _reopen(self, reopen: Reopen, session_id: str) -> None:
        """A fresh session on the replica the router picks now, holding what the lost one held."""
        reopen(session_id)  # through `open`, which waits for a replica
        self.rebuilt += 1

    def score(self, *, session_id: str, new_tokens: list[int], reopen: Reopen | None = None,
              position: int | None = None) -> Scored:
        for pause in self._pauses():
            try:
                return tuple(self._session(session_id).score.remote(  # type: ignore[return-value]
                    session_id, new_tokens, position).result())
            except SESSION_LOST:
                if reopen is None:
                    raise
                time.sleep(pause)
                self._reopen(reopen, session_id)
        raise RuntimeError(f"verifier: session {session_id!r} still lost after {self.patience_s:.0f} s")

    def score_batch(self, *, items: list[tuple[str, list[int]]], reopen: Reopen | None = None,
                    positions: list[int] | None = None) -> list[Scored]:
        """One call per session: sessions are spread over replicas by their id, and scoring is evaluation only."""
        return [self.score(session_id=session_id, new_tokens=new_tokens, reopen=reopen,
                           position=None if positions is None else positions[b])
                for b, (session_id, new_tokens) in enumerate(items)]

    def close(self, *, session_id: str) -> bool:
        try:
            return self._session(session_id).close.remote(session_id).result()
        except SESSION_LOST:
            return False  # its replica is gone, and the session with it


__all__ = ["APP_NAME", "ServeVerifierClient", "VerifierDeployment", "app", "config_from_args", "http_app",
           "start_verifier", "verifier_app"]
