"""The base station's side of a hybrid round: one LLM session per device session, verification in batches.

Terminology (vLLM's): a *draft* is the SLM's token d sent with its distribution x; it is *accepted* or rejected and
replaced by a *recovered* (resampled) token from norm(max(y - x, 0)). The paper's methods send one draft per round
and get no bonus token; the block method sends n drafts, verified in the same pass (sampling/block_verify.py), and gets
a *bonus* token from y_{n+1} when all are accepted. The LLM's KV cache then drops the rejected drafts.

`Verifier` is transport-free: the core loop calls it in-process, the Ray Serve deployment (actors/) wraps the same
object behind a handle and an HTTP route. A request carries the tokens the LLM has not seen yet (the previous
response token and any skipped drafts), so the LLM catches up in the same forward pass that scores the draft.
Accept/resample uniforms are keyed by (seed, device, prompt, round): the verdict does not depend on which batch the
request landed in. A distribution uploaded in half precision is verified as the distribution those values stand for
(`link.payload.payload_distribution`), which is what the device drew its draft from.
"""

from __future__ import annotations

import threading

import torch

from uhlm_ray.link.payload import payload_distribution
from uhlm_ray.models.loading import LoadedModel
from uhlm_ray.models.prefix_cache import PrefixCache
from uhlm_ray.models.session import CausalSession, forward_sessions
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
from uhlm_ray.sampling.block_verify import verify_block
from uhlm_ray.sampling.coupling import race_exponentials, race_winner, verify_coupled_block
from uhlm_ray.sampling.rng import Purpose, SessionKey
from uhlm_ray.sampling.verify import verify_draft


def uniforms(*, key: SessionKey, round_index: int) -> tuple[float, float]:
    """The accept-test and resampling uniforms of a round, in float64."""
    return (key.uniform(round_index=round_index, purpose=Purpose.ACCEPT),
            key.uniform(round_index=round_index, purpose=Purpose.RESAMPLE))


def block_uniforms(*, key: SessionKey, round_index: int, drafts: int) -> tuple[list[float], float]:
    """A block round's accept-test uniforms (one per draft, keyed by its place in the block) and the uniform of its
    recovered or bonus token; keyed by round, so a retried round verifies to the same tokens."""
    accept = [key.uniform(round_index=round_index, purpose=Purpose.ACCEPT, offset=i) for i in range(drafts)]
    return accept, key.uniform(round_index=round_index, purpose=Purpose.RESAMPLE, offset=drafts)


def coupled_winners(*, rows: list[torch.Tensor | None], key: SessionKey, first_position: int) -> list[int]:
    """The LLM's race winner at each scored position, from the logits [V] that predicted it (-1 where none did):
    the token a coupled LLM would have emitted there after the same prefix (evaluation only)."""
    return [race_winner(probs=torch.softmax(z, dim=-1), key=key, position=first_position + i) if z is not None else -1
            for i, z in enumerate(rows)]


def _check_unique(ids: list[str]) -> None:
    """A batch holds each session once: two requests would race on one KV cache."""
    if len(set(ids)) != len(ids):
        raise SessionError(f"sessions {sorted({i for i in ids if ids.count(i) > 1})} appear twice in a batch")


class Verifier:
    """LLM sessions by id, opened with a prompt, verified in batches, closed when the device is done."""

    def __init__(self, *, model: LoadedModel, max_sessions: int = 1024, prefixes: PrefixCache | None = None,
                 fuse_prefill: bool = False) -> None:
        self.model = model
        self.prefixes = prefixes  # forward passes shared with other runs of the same prompts
        # the prompt waits for the first verification pass (runtime.fuse_llm_prefill): one LLM forward fewer
        self.fuse_prefill = fuse_prefill
        self.vocab_size = model.vocab_size
        self.max_sessions = max_sessions
        self._sessions: dict[str, tuple[CausalSession, SessionKey]] = {}
        self.rounds_verified = 0  # drafts and blocks verified since start (a replica's load, in its health report)
        self._session_rounds: dict[str, int] = {}  # rounds verified per open session
        self._lock = threading.Lock()  # the Serve replica runs calls on worker threads

    @property
    def num_sessions(self) -> int:
        return len(self._sessions)

    def open(self, *, session_id: str, prompt_ids: list[int], key: SessionKey) -> float:
        """Prefill the prompt (or, fusing, leave it to the first verification pass); returns its seconds. Reopening
        an id replaces it (a retried device restarts)."""
        with self._lock:
            self._sessions.pop(session_id, None)
            self._session_rounds.pop(session_id, None)
            if len(self._sessions) >= self.max_sessions:
                raise SessionError(f"session {session_id!r}: the verifier already holds max_sessions="
                                   f"{self.max_sessions} sessions; close finished ones")
            session = CausalSession(model=self.model, prompt_ids=prompt_ids, prefixes=self.prefixes,
                                    eager=not self.fuse_prefill)
            self._sessions[session_id] = (session, key)
            self._session_rounds[session_id] = 0
            return session.prefill_s

    def close(self, *, session_id: str) -> bool:
        """Free a session's KV cache; False if it was not open."""
        with self._lock:
            self._session_rounds.pop(session_id, None)
            return self._sessions.pop(session_id, None) is not None

    def session_rounds(self) -> dict[str, int]:
        """Each open session's rounds verified since it was (re)opened."""
        with self._lock:
            return dict(self._session_rounds)

    def _count_rounds(self, ids: list[str]) -> None:
        self.rounds_verified += len(ids)
        for session_id in ids:
            self._session_rounds[session_id] += 1

    def _get(self, session_id: str) -> tuple[CausalSession, SessionKey]:
        if session_id not in self._sessions:
            raise UnknownSession(session_id)
        return self._sessions[session_id]

    def verify(self, requests: list[VerifyRequest], *, reopen: Reopen | None = None) -> list[VerifyResult]:
        """Verify one draft per request; every session catches up in one batched forward pass. (In process no
        session is ever lost, so `reopen` is not needed.)"""
        with self._lock:
            ids = [r.session_id for r in requests]
            _check_unique(ids)
            entries = [self._get(r.session_id) for r in requests]
            self._count_rounds(ids)
            for (session, _), request in zip(entries, requests, strict=True):
                for token in request.new_tokens:
                    session.append(token)
            ran = [not session.ready for session, _ in entries]  # a pass: tokens to catch up, or a fused prompt
            forward_sessions([s for s, _ in entries], score=any(r.score for r in requests))
            results = []
            for (session, key), request, passed in zip(entries, requests, ran, strict=True):
                y = torch.softmax(session.next_logits(), dim=-1)  # [V] float32
                if request.coupled:  # the LLM's own race winner at this position; beta is the device's to compute
                    winner = race_winner(probs=y, key=key, position=request.round_index)
                    token, accepted, beta = winner, winner == request.draft, float("nan")
                    resampled = not accepted
                else:
                    u_accept, u_resample = uniforms(key=key, round_index=request.round_index)
                    verdict = verify_draft(
                        x=payload_distribution(request.draft_probs).unsqueeze(0), y=y.unsqueeze(0),  # [1, V] each
                        draft=torch.tensor([request.draft]), u_accept=torch.tensor([u_accept], dtype=torch.float64),
                        u_resample=torch.tensor([u_resample], dtype=torch.float64), validate=False,
                    )
                    token, accepted, beta = int(verdict.token[0]), bool(verdict.accepted[0]), float(verdict.beta[0])
                    resampled = bool(verdict.recovered[0])
                caught_up = bool(request.new_tokens)
                winners = coupled_winners(rows=session.pending_rows, key=key,
                                          first_position=request.round_index - len(request.new_tokens)
                                          ) if request.coupled and request.score and caught_up else []
                results.append(VerifyResult(
                    token=token, accepted=accepted, resampled=resampled, y_d=float(y[request.draft]), beta=beta,
                    tau_llm_s=session.timing.forward_s if passed else 0.0,
                    catch_up_tokens=len(request.new_tokens), batch_size=len(requests),
                    new_token_probs=session.pending_probs if request.score and caught_up else [],
                    new_token_winners=winners,
                    scoring_s=session.timing.scoring_s if passed else 0.0,
                    replayed_s=session.timing.replayed_s if passed else 0.0,
                ))
            return results

    def verify_blocks(self, requests: list[BlockRequest], *, reopen: Reopen | None = None) -> list[BlockResult]:
        """Verify a block per request: every session catches up and scores its drafts in one batched pass (padded
        to the longest), then each keeps its accepted prefix and drops the rest from its KV cache."""
        with self._lock:
            ids = [r.session_id for r in requests]
            _check_unique(ids)
            entries = [self._get(r.session_id) for r in requests]
            self._count_rounds(ids)
            before = []
            for (session, _), request in zip(entries, requests, strict=True):
                if not request.drafts:
                    raise ValueError(f"session {request.session_id!r}: a block needs at least one draft")
                before.append(request.new_tokens[-1] if request.new_tokens else session.last_token)
                for token in (*request.new_tokens, *request.drafts):
                    session.append(token)
                session.want_rows(len(request.drafts) + 1)
            forward_sessions([s for s, _ in entries], score=any(r.score for r in requests))
            n_max = max(len(r.drafts) for r in requests)
            batch, vocab = len(requests), self.vocab_size
            target = torch.zeros(batch, n_max + 1, vocab)  # [B, N + 1, V] y_1 .. y_{n+1}, padded
            drafts = torch.zeros(batch, n_max, dtype=torch.long)  # [B, N]
            probs = None if all(r.draft_probs is None for r in requests) else torch.zeros(batch, n_max, vocab)
            verify = torch.ones(batch, n_max, dtype=torch.bool)  # [B, N]
            u_accept = torch.zeros(batch, n_max, dtype=torch.float64)  # [B, N]
            u_final = torch.zeros(batch, dtype=torch.float64)  # [B]
            for b, ((session, key), r) in enumerate(zip(entries, requests, strict=True)):
                n = len(r.drafts)
                target[b, :n + 1] = torch.softmax(session.row_logits, dim=-1)  # [n + 1, V]
                drafts[b, :n] = torch.tensor(r.drafts)
                if r.draft_probs is not None:  # a sparse upload (truncated) is densified; half precision renormalised
                    probs[b, :n] = payload_distribution(r.draft_probs.to_dense() if r.draft_probs.is_sparse
                                                        else r.draft_probs)
                elif probs is not None:  # a point mass among distributions in the same batch
                    probs[b, torch.arange(n), drafts[b, :n]] = 1.0
                if r.verify is not None:
                    verify[b, :n] = torch.tensor(r.verify)
                accept, u_final[b] = block_uniforms(key=key, round_index=r.round_index, drafts=n)
                u_accept[b, :n] = torch.tensor(accept, dtype=torch.float64)
            num_drafts = torch.tensor([len(r.drafts) for r in requests])
            plain = torch.tensor([b for b, r in enumerate(requests) if not r.coupled], dtype=torch.long)  # [P]
            picked: dict[int, tuple] = {}
            if len(plain):  # speculative sampling over the rows that are not coupled, in one call
                verdict = verify_block(target=target[plain], drafts=drafts[plain], num_drafts=num_drafts[plain],
                                       draft_probs=probs[plain] if probs is not None else None,
                                       u_accept=u_accept[plain], u_final=u_final[plain], verify=verify[plain])
                picked = {int(b): (verdict, j) for j, b in enumerate(plain.tolist())}
            for b, ((_, key), r) in enumerate(zip(entries, requests, strict=True)):
                if r.coupled:  # the shared race at the block's positions, one block at a time (its noise is |V| wide)
                    n = len(r.drafts)
                    noise = torch.stack([race_exponentials(key=key, position=r.position + i, vocab_size=vocab)
                                         for i in range(n + 1)]).unsqueeze(0)  # [1, n + 1, V]
                    picked[b] = (verify_coupled_block(
                        target=target[b:b + 1, :n + 1], drafts=drafts[b:b + 1, :n], num_drafts=num_drafts[b:b + 1],
                        exponentials=noise, verify=verify[b:b + 1, :n]), 0)
            results = []
            for b, ((session, key), r) in enumerate(zip(entries, requests, strict=True)):
                verdict, row = picked[b]
                n, a = len(r.drafts), int(verdict.num_accepted[row])
                rows = session.row_logits  # [n + 1, V]
                session.discard(count=n - a, last_token=r.drafts[a - 1] if a else before[b], logits=rows[a])
                catch_up = len(r.new_tokens)
                results.append(BlockResult(
                    tokens=verdict.tokens[row, :a + 1].tolist(), num_accepted=a,
                    recovered=bool(verdict.recovered[row]), bonus=bool(verdict.bonus[row]),
                    y_d=verdict.y_d[row, :n].tolist(), accept_prob=verdict.accept_prob[row, :n].tolist(),
                    winners=verdict.winners[row, :n].tolist() if verdict.winners is not None else [],
                    tau_llm_s=session.timing.forward_s, pass_tokens=catch_up + n, batch_size=batch,
                    new_token_probs=session.pending_probs[:catch_up] if r.score else [],
                    new_token_winners=coupled_winners(rows=session.pending_rows[:catch_up], key=key,
                                                      first_position=r.position - catch_up
                                                      ) if r.coupled and r.score else [],
                    scoring_s=session.timing.scoring_s, replayed_s=session.timing.replayed_s,
                ))
            return results

    def score(self, *, session_id: str, new_tokens: list[int], reopen: Reopen | None = None,
              position: int | None = None) -> Scored:
        """y of each token the LLM has not seen (evaluation only, e.g. the skipped tail of a response)."""
        (result,) = self.score_batch(items=[(session_id, new_tokens)], reopen=reopen,
                                     positions=None if position is None else [position])
        return result

    def score_batch(self, *, items: list[tuple[str, list[int]]], reopen: Reopen | None = None,
                    positions: list[int] | None = None) -> list[Scored]:
        """`score` for several sessions in one batched pass: (session_id, new tokens) each; returns each one's
        probabilities of its new tokens and the seconds of the pass (evaluation only: off both clocks). With
        `positions` (coupled sampling: each item's first response position), also the LLM's race winners there."""
        with self._lock:
            ids = [session_id for session_id, _ in items]
            _check_unique(ids)
            entries = [self._get(session_id) for session_id in ids]
            for (session, _), (_, new_tokens) in zip(entries, items, strict=True):
                for token in new_tokens:
                    session.append(token)
            forward_sessions([s for (s, _), (_, new) in zip(entries, items, strict=True) if new], score=True)
            out = []
            for b, ((session, key), (_, new)) in enumerate(zip(entries, items, strict=True)):
                if not new:
                    out.append(([], 0.0, []))
                    continue
                winners = [] if positions is None else coupled_winners(rows=session.pending_rows, key=key,
                                                                       first_position=positions[b])
                out.append((session.pending_probs, session.timing.forward_s + session.timing.scoring_s, winners))
            return out
