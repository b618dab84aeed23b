"""The device's side of a block round: draft while the stopping rule says go on, upload the block, keep the verdict.

A round r of `block_hlm`:
1. The SLM drafts d_1, d_2, ... from its own logits, one step each (the first step also processes the previous
   round's response tokens). Each draft is drawn from what will be uploaded: x (payload `full`), the top-k / top-p
   x~ (`truncated`), each as rounded to `payload.prob_dtype` (link/payload.py `quantise`), or x or its argmax when
   only ids go up (`ids`, verified as point masses). After each draft the
   stopping rule (uhlm_ray/device/stopping.py) decides whether to draft another; a block never exceeds
   `block.max_drafts` or the token budget less the verdict's own token, nor goes past an end-of-sequence draft.
2. The block is priced on the channel (uhlm_ray/link/channel.py) and uploaded with the ids of any tokens the LLM has not
   seen. With `block.skip_u_th` set (lossy), drafts with u <= skip_u_th are committed without a test, and a block
   of such drafts only is not uploaded at all (U-HLM's skip): its tokens ride to the LLM as sync ids later.
3. The verdict keeps a prefix of a drafts and adds a recovered or a bonus token; the caller rolls the SLM's KV cache
   back to the kept prefix (`CausalSession.discard`) and the round becomes one `BlockRecord`.

Like `DeviceDecoder` it holds no model and no transport, so the core loop and the Ray device actor share it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from uhlm_ray.config import EvaluateConfig
from uhlm_ray.device.decoder import PerturbedLogits, keyed_uniform, measure_uncertainty
from uhlm_ray.device.stopping import DraftStep, StopRule
from uhlm_ray.link.channel import Upload, expected_upload_seconds, upload
from uhlm_ray.link.fading import DecodeClock, process_for
from uhlm_ray.link.payload import block_payload_bits, quantise, sync_bits, truncate
from uhlm_ray.protocol import BlockRequest, BlockResult
from uhlm_ray.records import NAN, BlockRecord
from uhlm_ray.sampling.coupling import race_winner
from uhlm_ray.sampling.rng import Purpose, SessionKey
from uhlm_ray.sampling.verify import sample_inverse_cdf
from uhlm_ray.snr import linear_to_db


@dataclass
class BlockDraft:
    """One draft of the open block."""

    token: int
    logits: torch.Tensor  # [V] the SLM logits it was drawn from (the SLM's state if the block is cut before it)
    probs: torch.Tensor | None  # [V] q uploaded with it (x or x~, in payload.prob_dtype); None for ids
    kept: int  # entries of the uploaded distribution (0 for ids)
    step: DraftStep
    verified: bool
    tau_slm_s: float
    tau_uncertainty_s: float


class BlockDecoder:
    """One prompt of the block method on one device."""

    def __init__(
        self,
        *,
        key: SessionKey,
        cfg: EvaluateConfig,
        rule: StopRule,
        mean_snr: float,
        vocab_size: int,
        eos_token_ids: frozenset[int],
        evaluate: bool,
        prompt_last_token: int,
        support: int | None = None,
    ) -> None:
        self.key, self.cfg, self.rule = key, cfg, rule
        self.mean_snr, self.vocab_size, self.eos_token_ids = mean_snr, vocab_size, eos_token_ids
        self.support = vocab_size if support is None else support  # ids the SLM can draft: a dense upload's length
        self.evaluate = evaluate and cfg.block.skip_u_th is not None  # lossless blocks leave nothing to score
        # the uncertainty measure each draft runs ("" when neither the stop rule nor a skip threshold needs u)
        self.measure = cfg.uncertainty.measure if rule.needs_uncertainty or cfg.block.skip_u_th is not None else ""
        self.coupled = cfg.decode.sampling == "coupled"  # drafts are race winners, verified by the coupled rule
        self.tokens: list[int] = []
        self.records: list[BlockRecord] = []
        self.llm_seen = 0  # response tokens the verifier has processed
        self.uploaded = False
        self.stop_reason: str | None = None
        self.round = 0
        self.block: list[BlockDraft] = []
        self._prompt_last = prompt_last_token
        self._gain = 1.0
        self._upload: Upload | None = None
        # the device's fading process in time (None: per_round or no fading) and its decode-time modelled clock
        self.process = process_for(channel=cfg.channel, key=key)
        self.decode_clock = DecodeClock.for_run(cfg, measure=self.measure, vocab_size=vocab_size)
        self.now_s = 0.0  # modelled time the open round started
        self._start_s = 0.0  # modelled time the open round decided its upload
        self._payload = self._sync = 0  # the priced upload's bits, and of them the sync ids
        self._unscored: list[tuple[BlockRecord, int] | None] = []  # aligned with tokens[llm_seen:]

    @property
    def done(self) -> bool:
        return self.stop_reason is not None

    @property
    def last_draft(self) -> int:
        return self.block[-1].token

    def begin_round(self) -> None:
        self.round += 1
        self.block = []
        self._upload = None
        if self.process is not None:
            self._gain = self.process.gain_at(self.now_s)
        else:
            self._gain = float(self._uplink_rng().exponential(1.0)) if self.cfg.channel.fading == "rayleigh" else 1.0
        # the device knows the fading at the moment it decides (per_round: this round's, before it drafts)
        self.rule.begin_round(catch_up=len(self.tokens) - self.llm_seen, upload_s=lambda k: expected_upload_seconds(
            bits=self._bits(k), channel=self.cfg.channel, mean_snr=self.mean_snr, gain=self._gain_now(),
            start_s=self._decision_s()))

    def _uplink_rng(self):
        return self.key.rng(round_index=self.round, purpose=Purpose.UPLINK)

    def _decision_s(self) -> float:
        """Modelled time now, after the open block's drafts and their measures (the decode-time clock)."""
        return self.now_s + self.decode_clock.decision_seconds(
            steps=len(self.block), measured_s=sum(d.tau_uncertainty_s for d in self.block))

    def _gain_now(self) -> float:
        return self.process.gain_at(self._decision_s()) if self.process is not None else self._gain

    def _bits(self, drafts: int) -> int:
        """The upload of a block of `drafts` drafts (the open block's kept counts, its mean for drafts to come)."""
        kept = [d.kept for d in self.block][:drafts]
        kept += [round(sum(kept) / len(kept)) if kept else 1] * (drafts - len(kept))
        return block_payload_bits(payload=self.cfg.block.payload, kept=kept, verified=[True] * drafts,
                                  vocab_size=self.vocab_size, cfg=self.cfg.payload, support=self.support) \
            + self._sync_bits()

    def _sync_bits(self) -> int:
        skipped = len(self.tokens) - self.llm_seen - (1 if self.uploaded else 0)
        return sync_bits(skipped_tokens=skipped, vocab_size=self.vocab_size) if self.cfg.payload.sync_token_ids \
            else 0

    def add_draft(self, *, logits: torch.Tensor, tau_slm_s: float, perturbed: PerturbedLogits | None = None) -> bool:
        """Draw the next draft from the SLM's logits z [V] (float32); returns whether to draft another."""
        block, i = self.cfg.block, len(self.block)
        x = torch.softmax(logits, dim=-1)  # [V] eq. 1
        probs, kept, drawn_from = None, 0, x  # drawn_from [V]: what the draft is drawn from
        if block.payload in ("full", "truncated"):
            # the upload in payload.prob_dtype, and the distribution those values stand for: the draft is drawn from
            # that, so verification against the upload stays exact (tokens that underflowed are not sent)
            q = x if block.payload == "full" else \
                truncate(probs=x, truncation=block.truncation, top_k=block.top_k, top_p=block.top_p).probs
            upload_values = quantise(probs=q, dtype=self.cfg.payload.dtype)
            probs, drawn_from = upload_values.sent, upload_values.probs
            kept = self.support if block.payload == "full" else int(torch.count_nonzero(probs))
        if block.greedy:
            token = int(torch.argmax(x))
        elif self.coupled:  # the race on the noise the verifier shares, at this draft's response position
            token = race_winner(probs=x, key=self.key, position=len(self.tokens) + i + 1)
        else:
            uniform = keyed_uniform(key=self.key, round_index=self.round, purpose=Purpose.DRAFT, offset=i)
            token = int(sample_inverse_cdf(probs=drawn_from.unsqueeze(0), uniform=uniform)[0])
        u, spent = NAN, 0.0
        if self.measure:
            start = time.perf_counter()
            u = measure_uncertainty(logits=logits, probs=x, draft=token, cfg=self.cfg, perturbed=perturbed,
                                    rng=self.key.rng(round_index=self.round, purpose=Purpose.TEMPERATURES, offset=i))
            spent = time.perf_counter() - start
        verified = block.skip_u_th is None or not u <= block.skip_u_th
        step = DraftStep(uncertainty=u, x_d=float(drawn_from[token]), tau_slm_s=tau_slm_s,
                         tau_uncertainty_s=spent, verified=verified)
        self.block.append(BlockDraft(token=token, logits=logits, probs=probs, kept=kept, step=step,
                                     verified=verified, tau_slm_s=tau_slm_s, tau_uncertainty_s=spent))
        # the verdict adds a token of its own, so b tokens left take b - 1 drafts (as Hugging Face caps its assistant):
        # a b-th draft could only displace the bonus token, at the cost of an SLM step
        budget = max(self.cfg.decode.max_new_tokens - len(self.tokens) - 1, 1)
        if token in self.eos_token_ids or len(self.block) >= min(block.max_drafts, budget):
            return False
        return self.rule.go_on(step=step, block=[d.step for d in self.block])

    def close_block(self) -> bool:
        """After the last draft: price the upload; returns whether the block goes up (it holds a draft to verify
        and the upload met its deadline, if any)."""
        self._start_s = self._decision_s()
        self._gain = self._gain_now()
        if not any(d.verified for d in self.block):
            return False
        self._sync = self._sync_bits()
        self._payload = block_payload_bits(payload=self.cfg.block.payload, kept=[d.kept for d in self.block],
                                           verified=[d.verified for d in self.block], vocab_size=self.vocab_size,
                                           cfg=self.cfg.payload, support=self.support) + self._sync
        self._upload = upload(bits=self._payload, channel=self.cfg.channel, mean_snr=self.mean_snr,
                              rng=self._uplink_rng(), process=self.process, start_s=self._start_s)
        return self._upload.delivered

    def request(self, *, session_id: str) -> BlockRequest:
        probs = None
        if self.cfg.block.payload != "ids":
            probs = torch.stack([d.probs for d in self.block])  # [n, V]
            if self.cfg.block.payload == "truncated":
                probs = probs.to_sparse()  # what goes up is the kept entries only
        verify = [d.verified for d in self.block]
        return BlockRequest(session_id=session_id, round_index=self.round, new_tokens=self.tokens[self.llm_seen:],
                            drafts=[d.token for d in self.block], draft_probs=probs,
                            verify=None if all(verify) else verify, score=self.evaluate, coupled=self.coupled,
                            position=len(self.tokens) + 1)

    def commit(self, *, result: BlockResult | None, wall_s: float) -> BlockRecord:
        """The verdict (None: the block was not uploaded, its drafts are kept unverified) becomes the round's record.

        `wall_s` is the round's measured wall time; evaluation-only seconds are taken out here.
        """
        drafts = [d.token for d in self.block]
        n = len(drafts)
        sent = result is not None
        up = self._upload
        position = len(self.tokens) + 1
        record = BlockRecord(
            method="block_hlm", prompt_index=self.key.prompt, round=self.round, position=position, drafts=drafts,
            uncertainty=[d.step.uncertainty for d in self.block], x_d=[d.step.x_d for d in self.block],
            verified=[d.verified for d in self.block], sent=sent,
            tokens=result.tokens if sent else list(drafts), num_accepted=result.num_accepted if sent else n,
            recovered=result.recovered if sent else False, bonus=result.bonus if sent else False,
            y_d=result.y_d if sent else [NAN] * n, accept_prob=result.accept_prob if sent else [NAN] * n,
            payload_bits=self._payload if sent else 0, sync_bits=self._sync if sent else 0,
            kept_tokens=sum(d.kept for d in self.block) if sent else 0,
            fading_gain=self._gain, snr_db=linear_to_db(self.mean_snr * self._gain),
            upload_attempts=up.attempts if up is not None else 0,
            deadline_fallback=up is not None and not up.delivered,
            tau_up_s=up.seconds if up is not None else 0.0, tau_air_s=up.air_s if up is not None else 0.0,
            up_start_s=self._start_s,
            tau_slm_s=sum(d.tau_slm_s for d in self.block),
            tau_uncertainty_s=sum(d.tau_uncertainty_s for d in self.block),
            tau_llm_s=result.tau_llm_s if sent else 0.0, llm_pass_tokens=result.pass_tokens if sent else 0,
            wall_s=wall_s - (result.scoring_s if sent else 0.0), verify_batch_size=result.batch_size if sent else 0,
            verify_replica=result.replica if sent else "",
        )
        if sent:
            self._fill_scores(probs=result.new_token_probs, winners=result.new_token_winners)
            if result.winners:  # the LLM's winners at the committed drafts' positions: the kept ones and the next
                a = result.num_accepted
                record.llm_tokens = [w if i <= a else -1 for i, w in enumerate(result.winners)]
            self.llm_seen = len(self.tokens) + result.num_accepted  # all but the LLM's own last token
            self.uploaded = True
            self.rule.observe(block=[d.step for d in self.block], num_accepted=result.num_accepted)
        elif self.coupled:
            record.llm_tokens = [-1] * n  # filled when the LLM scores them (evaluation mode)
        emitted = record.tokens
        for i, token in enumerate(emitted):
            if len(self.tokens) >= self.cfg.decode.max_new_tokens:
                self.stop_reason = "max_new_tokens"
                break
            self.tokens.append(token)
            if len(self.tokens) > self.llm_seen:  # committed here, unseen by the LLM: scored later, if evaluating
                self._unscored.append((record, i) if not sent else None)
            if token in self.eos_token_ids:
                self.stop_reason = "eos"
                break
        if self.stop_reason is None and len(self.tokens) >= self.cfg.decode.max_new_tokens:
            self.stop_reason = "max_new_tokens"
        self.records.append(record)
        # the next round starts when this one ends on the decode-time clock (as measures/clock.py prices a block)
        self.now_s += self.decode_clock.round_seconds(record)
        return record

    def slm_rewind(self) -> tuple[int, int, torch.Tensor | None, list[int]]:
        """How the SLM session follows the verdict: (tokens to discard, the last token kept, the logits after it,
        tokens to append). The session processed d_1 .. d_{n-1}; it keeps d_1 .. d_a and appends what follows."""
        record = self.records[-1]
        n, a = len(record.drafts), record.num_accepted
        if a == n:  # every draft kept: d_n and the bonus (if any) are new to the SLM
            return 0, record.drafts[-1], None, [record.drafts[-1], *record.tokens[n:]]
        before = record.position - 1  # response tokens before the round
        last = record.drafts[a - 1] if a else (self.tokens[before - 1] if before else self._prompt_last)
        return n - 1 - a, last, self.block[a].logits, record.tokens[a:]

    def unscored_tokens(self) -> list[int]:
        return self.tokens[self.llm_seen:] if self.evaluate else []

    def finish_scoring(self, *, probs: list[float], winners: list[int]) -> None:
        self._fill_scores(probs=probs, winners=winners)
        self.llm_seen = len(self.tokens)

    def _fill_scores(self, *, probs: list[float], winners: list[int]) -> None:
        """y of the catch-up tokens: a draft committed unverified gets its y_d (TSR and rejection risk), and with
        coupled sampling the LLM's race winner at its position."""
        for entry, winner in zip(self._unscored, winners, strict=False):
            if entry is not None:
                record, i = entry
                record.llm_tokens[i] = winner
        for entry, y in zip(self._unscored, probs, strict=False):
            if entry is not None and not math.isnan(y):
                record, i = entry
                record.y_d[i] = y
                record.accept_prob[i] = y if self.cfg.block.payload == "ids" else min(1.0, y / record.x_d[i])
        self._unscored = []
