"""The base station's side of a hybrid round: one LLM session per device session, verification in batches.

Terminology (vLLM's): a *draft* is the SLM's token d sent with its distribution x; it is *accepted* or rejected and
replaced by a *recovered* (resampled) token from norm(max(y - x, 0)). There are no bonus tokens: one draft per round.

`Verifier` is transport-free: the core loop calls it in-process, the Ray Serve deployment (actors/) wraps the same
object behind a handle and an HTTP route. A request carries the tokens the LLM has not seen yet (the previous
response token and any skipped drafts), so the LLM catches up in the same forward pass that scores the draft.
Accept/resample uniforms are keyed by (seed, device, prompt, round): the verdict does not depend on which batch the
request landed in.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch

from uhlm_ray.models.loading import LoadedModel
from uhlm_ray.models.prefix_cache import PrefixCache
from uhlm_ray.models.session import CausalSession, forward_sessions
from uhlm_ray.rng import Purpose, SessionKey
from uhlm_ray.verify import verify_draft


class SessionError(KeyError):
    """An unknown, duplicate or exhausted session id; the message names the session."""

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


@dataclass
class VerifyRequest:
    session_id: str
    round_index: int  # t, from 1
    draft: int  # d
    new_tokens: list[int]  # response tokens the LLM has not processed, oldest first
    draft_probs: torch.Tensor  # x [V] float32, the distribution d was drawn from
    score: bool = False  # also return y of each new token (evaluation mode)


@dataclass
class VerifyResult:
    token: int  # r(t): d if accepted, else the recovered token
    accepted: bool
    resampled: bool
    y_d: float
    beta: float  # rejection probability max(1 - y_d / x_d, 0)
    tau_llm_s: float  # the batched catch-up forward that produced y (wall)
    catch_up_tokens: int
    batch_size: int
    new_token_probs: list[float] = field(default_factory=list)  # y of each new token, with score=True
    scoring_s: float = 0.0  # evaluation-only seconds inside this call
    replayed_s: float = 0.0  # of tau_llm_s, seconds replayed from a PrefixCache rather than spent here


def uniforms(*, key: SessionKey, round_index: int) -> tuple[float, float]:
    """The accept-test and resampling uniforms of a round."""
    return (key.rng(round_index=round_index, purpose=Purpose.ACCEPT).random(),
            key.rng(round_index=round_index, purpose=Purpose.RESAMPLE).random())


class Verifier:
    """LLM sessions by id, opened with a prompt, verified in batches, closed when the device is done."""

    def __init__(self, *, model: LoadedModel, max_sessions: int = 1024, prefixes: PrefixCache | None = None) -> None:
        self.model = model
        self.prefixes = prefixes  # forward passes shared with other runs of the same prompts
        self.vocab_size = model.vocab_size
        self.max_sessions = max_sessions
        self._sessions: dict[str, tuple[CausalSession, SessionKey]] = {}
        self._lock = threading.Lock()  # the Serve replica runs calls on worker threads

    @property
    def num_sessions(self) -> int:
        return len(self._sessions)

    def open(self, *, session_id: str, prompt_ids: list[int], key: SessionKey) -> float:
        """Prefill the prompt; returns its seconds. Reopening an id replaces it (a retried device restarts)."""
        with self._lock:
            self._sessions.pop(session_id, None)
            if len(self._sessions) >= self.max_sessions:
                raise SessionError(f"session {session_id!r}: the verifier already holds max_sessions="
                                   f"{self.max_sessions} sessions; close finished ones")
            session = CausalSession(model=self.model, prompt_ids=prompt_ids, prefixes=self.prefixes)
            self._sessions[session_id] = (session, key)
            return session.prefill_s

    def close(self, *, session_id: str) -> bool:
        """Free a session's KV cache; False if it was not open."""
        with self._lock:
            return self._sessions.pop(session_id, None) is not None

    def _get(self, session_id: str) -> tuple[CausalSession, SessionKey]:
        if session_id not in self._sessions:
            raise SessionError(f"session {session_id!r} is not open")
        return self._sessions[session_id]

    def verify(self, requests: list[VerifyRequest]) -> list[VerifyResult]:
        """Verify one draft per request; every session catches up in one batched forward pass."""
        with self._lock:
            ids = [r.session_id for r in requests]
            if len(set(ids)) != len(ids):
                raise SessionError(f"sessions {sorted({i for i in ids if ids.count(i) > 1})} appear twice in a batch")
            entries = [self._get(r.session_id) for r in requests]
            for (session, _), request in zip(entries, requests, strict=True):
                for token in request.new_tokens:
                    session.append(token)
            forward_sessions([s for s, _ in entries], score=any(r.score for r in requests))
            results = []
            for (session, key), request in zip(entries, requests, strict=True):
                y = torch.softmax(session.next_logits(), dim=-1)  # [V] float32
                u_accept, u_resample = uniforms(key=key, round_index=request.round_index)
                verdict = verify_draft(
                    x=request.draft_probs.float().unsqueeze(0), y=y.unsqueeze(0),  # [1, V] each
                    draft=torch.tensor([request.draft]), u_accept=torch.tensor([u_accept]),
                    u_resample=torch.tensor([u_resample]), validate=False,
                )
                caught_up = bool(request.new_tokens)
                results.append(VerifyResult(
                    token=int(verdict.token[0]), accepted=bool(verdict.accepted[0]),
                    resampled=bool(verdict.recovered[0]), y_d=float(y[request.draft]), beta=float(verdict.beta[0]),
                    tau_llm_s=session.timing.forward_s if caught_up else 0.0,
                    catch_up_tokens=len(request.new_tokens), batch_size=len(requests),
                    new_token_probs=session.pending_probs if request.score and caught_up else [],
                    scoring_s=session.timing.scoring_s if caught_up else 0.0,
                    replayed_s=session.timing.replayed_s if caught_up else 0.0,
                ))
            return results

    def score(self, *, session_id: str, new_tokens: list[int]) -> tuple[list[float], float]:
        """y of each token the LLM has not seen (evaluation only, e.g. the skipped tail of a response)."""
        with self._lock:
            session, _ = self._get(session_id)
            if not new_tokens:
                return [], 0.0
            for token in new_tokens:
                session.append(token)
            session.next_logits(score=True)
            return session.pending_probs, session.timing.forward_s + session.timing.scoring_s
