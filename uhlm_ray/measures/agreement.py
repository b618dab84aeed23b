"""Where a method's response leaves the LLM alone's, under coupled sampling (decode.sampling=coupled).

With shared noise an exact method emits the LLM alone's tokens, so a lossy method differs from the LLM only where
it committed a draft unverified that is not the LLM's race winner at that position. Evaluation mode scores those
drafts, and the verifier returns the winner (`llm_token` / `llm_tokens` in the records), so the event is counted:
- unverified disagreement: the share of committed-unverified tokens whose LLM winner is another token;
- first divergence: the first response position (from 1) where the method's tokens differ from the LLM alone's on
  the same prompt; a response equal to the LLM's has none.
"""

from __future__ import annotations

import math
import statistics

from uhlm_ray.records import BlockRecord, PromptResult, RoundRecord


def unverified_checks(records: list[RoundRecord] | list[BlockRecord]) -> list[bool]:
    """One entry per committed-unverified token whose LLM winner is known: True where the draft differs from it."""
    out: list[bool] = []
    for r in records:
        if isinstance(r, BlockRecord):
            committed = r.num_accepted if r.sent else len(r.drafts)
            out += [r.drafts[i] != r.llm_tokens[i] for i in range(min(committed, len(r.llm_tokens)))
                    if not (r.sent and r.verified[i]) and r.llm_tokens[i] >= 0]
        elif not r.sent and r.llm_token >= 0:
            out.append(r.token != r.llm_token)
    return out


def first_divergence(*, tokens: list[int], reference: list[int]) -> int | None:
    """The first position (from 1) where `tokens` leaves `reference`; None when they are equal."""
    for i, (a, b) in enumerate(zip(tokens, reference, strict=False)):
        if a != b:
            return i + 1
    return None if len(tokens) == len(reference) else min(len(tokens), len(reference)) + 1


def agreement_summary(*, results: list[PromptResult], reference: list[PromptResult] | None) -> dict[str, float]:
    """The disagreement share of unverified tokens, and against the LLM alone's responses on the same prompts (when
    given): the share of responses identical to it and the median first divergence of the others."""
    checks = unverified_checks([r for res in results for r in res.records])
    out = {"unverified_checked": float(len(checks)),
           "unverified_disagreement": sum(checks) / len(checks) if checks else math.nan}
    if reference is not None:
        by_prompt = {res.prompt_index: res.tokens for res in reference}
        paired = [(res.tokens, by_prompt[res.prompt_index]) for res in results if res.prompt_index in by_prompt]
        points = [first_divergence(tokens=a, reference=b) for a, b in paired]
        diverged = [p for p in points if p is not None]
        out["identical_to_llm"] = (len(points) - len(diverged)) / len(points) if points else math.nan
        out["first_divergence_median"] = statistics.median(diverged) if diverged else math.nan
    return out
