"""The LLM verifier as a Ray Serve deployment: batched verification, one KV cache per device session, an HTTP route.

Devices call it through a DeploymentHandle (`ServeVerifierClient`); other programs can use the JSON route described
in actors/http_schema.py. Requests that arrive together are verified in one batched forward pass
(`@serve.batch`); `max_ongoing_requests` is kept at least the batch size so that batches can actually fill.
"""


import asyncio

import ray
import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from ray import serve

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
from uhlm_ray.config import EvaluateConfig, config_from_dict, config_to_dict, validate_config
from uhlm_ray.models.loading import load_model, resolve_dtype
from uhlm_ray.models.presets import resolve_pair
from uhlm_ray.verifier import (
    BlockRequest,
    BlockResult,
    SessionError,
    SessionKey,
    Verifier,
    VerifyRequest,
    VerifyResult,
)

APP_NAME = "uhlm-verifier"
DEPLOYMENT_NAME = "VerifierDeployment"

app = FastAPI(title="uhlm_ray verifier", description="Speculative verification of SLM drafts by the LLM.")


@app.middleware("http")
async def _limit_body(request: Request, call_next):
    declared = request.headers.get("content-length")
    if declared is not None and int(declared) > MAX_BODY_BYTES:
        return JSONResponse(status_code=413, content={"detail": [
            {"loc": ["body"], "msg": f"body of {declared} bytes exceeds {MAX_BODY_BYTES}", "type": "too_large"}]})
    return await call_next(request)


def _field_error(err: FieldError) -> HTTPException:
    return HTTPException(status_code=422, detail=[{"loc": list(err.loc), "msg": str(err), "type": "value_error"}])


def _raise_any(results: list) -> list:
    for result in results:
        if isinstance(result, Exception):
            raise result
    return list(results)


@serve.deployment(name=DEPLOYMENT_NAME)
@serve.ingress(app)
class VerifierDeployment:
    def __init__(self, config: dict) -> None:
        cfg = config_from_dict(config)
        device = cfg.runtime.verifier_device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if cfg.model.num_threads is not None:
            torch.set_num_threads(cfg.model.num_threads)
        _, llm_source = resolve_pair(cfg.model)
        self.model = load_model(llm_source, dtype=resolve_dtype(cfg.model.dtype, device=device), device=device)
        self.device = device
        self.core = Verifier(model=self.model, max_sessions=cfg.runtime.max_sessions)
        self.max_batch_size = cfg.runtime.max_batch_size
        for batched in (self._verify_batch, self._block_batch):
            batched.set_max_batch_size(cfg.runtime.max_batch_size)
            batched.set_batch_wait_timeout_s(cfg.runtime.batch_wait_timeout_s)

    # --- the handle API (Python objects inside the Ray cluster) ---

    def info(self) -> dict:
        return {"vocab_size": self.core.vocab_size, "eos_token_ids": sorted(self.model.eos_token_ids),
                "sessions": self.core.num_sessions, "max_batch_size": self.max_batch_size, "device": self.device,
                "node_id": ray.get_runtime_context().get_node_id()}

    async def open(self, session_id: str, prompt_ids: list[int], key: SessionKey) -> float:
        return await asyncio.to_thread(self.core.open, session_id=session_id, prompt_ids=prompt_ids, key=key)

    async def verify(self, request: VerifyRequest) -> VerifyResult:
        (result,) = await self.verify_group([request])
        return result

    async def verify_group(self, requests: list[VerifyRequest]) -> list[VerifyResult]:
        """A device actor's drafts of one round in one call: queued together, so they share a batch (with other
        actors' drafts that arrive meanwhile) instead of trickling in one handle call at a time."""
        return _raise_any(await asyncio.gather(*[self._verify_batch(r) for r in requests]))

    async def verify_block(self, request: BlockRequest) -> BlockResult:
        (result,) = await self.verify_block_group([request])
        return result

    async def verify_block_group(self, requests: list[BlockRequest]) -> list[BlockResult]:
        """A device actor's blocks of one round: blocks of different lengths from many devices share one padded
        batched pass."""
        return _raise_any(await asyncio.gather(*[self._block_batch(r) for r in requests]))

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
                out[i] = result
        except SessionError:  # isolate the unknown session(s) and verify the rest
            for i in good:
                try:
                    (out[i],) = verify([requests[i]])
                except SessionError as err:
                    out[i] = err
        return out

    async def score(self, session_id: str, new_tokens: list[int]) -> tuple[list[float], float]:
        return await asyncio.to_thread(self.core.score, session_id=session_id, new_tokens=new_tokens)

    async def close(self, session_id: str) -> bool:
        return await asyncio.to_thread(self.core.close, session_id=session_id)

    # --- the HTTP route (JSON only) ---

    @app.get("/v1/health")
    def http_health(self) -> dict:
        return self.info()

    @app.post("/v1/sessions")
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

    @app.post("/v1/sessions/{session_id}/verify")
    async def http_verify(self, session_id: str, body: Verify) -> VerifyAnswer:
        try:
            request = to_request(session_id=session_id, body=body, vocab_size=self.core.vocab_size)
        except FieldError as err:
            raise _field_error(err) from err
        try:
            r = await self.verify(request)
        except SessionError as err:
            raise HTTPException(status_code=404, detail=str(err)) from err
        return VerifyAnswer(token_id=r.token, accepted=r.accepted, resampled=r.resampled, y_d=r.y_d, beta=r.beta,
                            tau_llm_s=r.tau_llm_s, catch_up_tokens=r.catch_up_tokens, batch_size=r.batch_size,
                            new_token_probs=r.new_token_probs)

    @app.post("/v1/sessions/{session_id}/block")
    async def http_block(self, session_id: str, body: Block) -> BlockAnswer:
        try:
            request = to_block_request(session_id=session_id, body=body, vocab_size=self.core.vocab_size)
        except FieldError as err:
            raise _field_error(err) from err
        try:
            r = await self.verify_block(request)
        except SessionError as err:
            raise HTTPException(status_code=404, detail=str(err)) from err
        return BlockAnswer(token_ids=r.tokens, num_accepted=r.num_accepted, recovered=r.recovered, bonus=r.bonus,
                           y_d=r.y_d, accept_prob=r.accept_prob, tau_llm_s=r.tau_llm_s, pass_tokens=r.pass_tokens,
                           batch_size=r.batch_size, new_token_probs=r.new_token_probs)

    @app.delete("/v1/sessions/{session_id}")
    async def http_close(self, session_id: str) -> dict:
        return {"closed": await self.close(session_id)}


def verifier_app(cfg: EvaluateConfig):
    """The deployment bound to a config, with the runtime section's placement and batching."""
    runtime = cfg.runtime
    actor_options: dict = {"num_cpus": 1}
    if runtime.verifier_num_gpus > 0:
        actor_options["num_gpus"] = runtime.verifier_num_gpus
    if runtime.verifier_resources:
        actor_options["resources"] = dict(runtime.verifier_resources)
    ongoing = runtime.max_ongoing_requests or 2 * runtime.max_batch_size
    return VerifierDeployment.options(
        ray_actor_options=actor_options, max_ongoing_requests=ongoing, num_replicas=1,
    ).bind(config_to_dict(cfg))


def start_verifier(cfg: EvaluateConfig) -> serve.handle.DeploymentHandle:
    """Start Serve on the configured loopback address (unless already running) and deploy the verifier."""
    validate_config(cfg)  # fail here, naming the field, rather than inside a replica
    serve.start(http_options={"host": cfg.runtime.http_host, "port": cfg.runtime.http_port})
    return serve.run(verifier_app(cfg), name=APP_NAME, route_prefix="/verifier")


class ServeVerifierClient:
    """The core loop's VerifierClient over a DeploymentHandle: concurrent requests, so Serve can batch them."""

    def __init__(self, handle: serve.handle.DeploymentHandle | None = None) -> None:
        self.handle = handle or serve.get_deployment_handle(DEPLOYMENT_NAME, app_name=APP_NAME)

    def info(self) -> dict:
        return self.handle.info.remote().result()

    def open(self, *, session_id: str, prompt_ids: list[int], key: SessionKey) -> float:
        return self.handle.open.remote(session_id, prompt_ids, key).result()

    def verify(self, requests: list[VerifyRequest]) -> list[VerifyResult]:
        return self.handle.verify_group.remote(requests).result() if requests else []

    def verify_blocks(self, requests: list[BlockRequest]) -> list[BlockResult]:
        return self.handle.verify_block_group.remote(requests).result() if requests else []

    def score(self, *, session_id: str, new_tokens: list[int]) -> tuple[list[float], float]:
        return tuple(self.handle.score.remote(session_id, new_tokens).result())  # type: ignore[return-value]

    def close(self, *, session_id: str) -> bool:
        return self.handle.close.remote(session_id).result()


__all__ = ["APP_NAME", "ServeVerifierClient", "VerifierDeployment", "start_verifier", "verifier_app"]
