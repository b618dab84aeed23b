"""The step API: one sequence in one model, with a KV cache and lazy catch-up.

Both sides use the same class. The device's SLM appends each response token and asks for the next logits every
round (one-token forward). The base station's LLM also appends every response token, but runs only when it is asked
to verify: it then processes, in a single forward pass against its cache, every token it has not seen yet (the
skipped rounds' tokens and the previous response token). The cost of a round therefore grows with the text only
through attention over the cache, never through re-encoding the prefix.

`forward_sessions` runs that step for several sessions of one model in batched forward passes (the Serve
verifier's batch, or the simulated devices sharing one SLM): the caches are left-padded to a common length for the
pass and each session keeps only its own new keys and values afterwards. A batch of one is exactly the solo path.
A session alone can take its pass from a `PrefixCache` (models/prefix_cache.py) when another session already fed
the same model the same tokens in the same chunks: its prompt prefill, or a whole shared stretch of a sweep.

Scoring (evaluation mode): a catch-up forward already computes hidden states at every new position, so the LLM's
probability of each caught-up token (a skipped draft's y_d) costs only the output projection of those positions,
which is done after the timed part and reported as evaluation time.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from uhlm_ray.config import FUSED_AND_SHARED
from uhlm_ray.models.loading import LoadedModel
from uhlm_ray.models.prefix_cache import ChunkEntry, PrefixCache, chunk_key, model_fingerprint
from uhlm_ray.validation import ConfigError


@dataclass
class StepTiming:
    """What the last forward of a session cost: `forward_s` on the clocks, `scoring_s` evaluation-only."""

    forward_s: float = 0.0
    scoring_s: float = 0.0
    tokens: int = 0  # tokens processed in that forward (the catch-up count)
    batch_size: int = 1
    replayed_s: float = 0.0  # forward_s minus what this session really spent: the pass came from a PrefixCache


class CausalSession:
    """Created with its prompt already processed (the prefill), timed in `prefill_s`; or, with `eager=False`, with
    the prompt pending: the first pass then processes it with whatever was appended since (Hugging Face assisted
    generation's first verification pass, one forward fewer per prompt), its time lands in that pass and
    `prefill_s` is 0. The prompt's own tokens are never scored."""

    def __init__(self, *, model: LoadedModel, prompt_ids: list[int], prefixes: PrefixCache | None = None,
                 eager: bool = True) -> None:
        if not prompt_ids:
            raise ConfigError("prompt_ids is empty: a session needs at least one prompt token")
        if not eager and prefixes is not None:
            raise ConfigError(FUSED_AND_SHARED)
        _check_plain_output_head(model.model)
        self._model = model.model
        self._device = next(model.model.parameters()).device
        self._cache = DynamicCache(config=model.model.config)
        self._pending: list[int] = list(prompt_ids)  # tokens the model has not processed yet
        self._logits: torch.Tensor | None = None  # [V] float32, next-token logits after every processed token
        self._last_logits: torch.Tensor | None = None  # [V] the logits that predicted _pending[0]
        self.processed = 0  # tokens in the KV cache
        self._last_token = prompt_ids[-1]  # the most recently processed token
        self.pending_probs: list[float] = []  # with score=True: the model's probability of each caught-up token
        # with score=True: the logits [V] that predicted each caught-up token (None: not kept), for coupled winners
        self.pending_rows: list[torch.Tensor | None] = []
        # the chain of chunks this session fed its model; None once it left the shareable (solo) path
        self._prefixes = prefixes
        self._chunk: str | None = (model_fingerprint(model=model.model, source=model.source, device=str(self._device))
                                    if prefixes is not None else None)
        self._rows = 1  # next-token logits wanted from the next pass: its last `_rows` positions (a block's y)
        self.row_logits: torch.Tensor | None = None  # [rows, V] float32 after a pass that asked for several
        self._unscored = 0 if eager else len(prompt_ids)  # leading pending tokens no pass scores (a deferred prompt)
        self.prefill_s = 0.0  # the prompt's pass, measured or replayed (0: deferred)
        if eager:
            self.next_logits()
            self.prefill_s = self.timing.forward_s
        self.timing = StepTiming(tokens=0)  # the prefill is reported in prefill_s, never as a round's forward

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def ready(self) -> bool:
        """True when next_logits() needs no forward pass."""
        return self._logits is not None

    def append(self, token: int) -> None:
        """A response token is final: the model will see it at its next forward pass."""
        if self._logits is not None:
            self._last_logits = self._logits
        self._pending.append(int(token))
        self._logits = None

    def want_rows(self, rows: int) -> None:
        """Ask the next pass for the next-token logits after each of its last `rows` positions, not only the last
        (a block's y_1 .. y_{n+1}); they land in `row_logits`. When the pass has fewer new tokens than `rows`, the
        first row is the logits the previous pass left (they predicted the first pending token)."""
        if rows > len(self._pending) + 1 or (rows == len(self._pending) + 1 and self._last_logits is None):
            raise ValueError(f"want_rows({rows}): only {len(self._pending)} pending tokens and "
                             f"{'no' if self._last_logits is None else 'one'} earlier row")
        self._rows = rows

    @property
    def last_token(self) -> int:
        """The most recently processed token."""
        return self._last_token

    def discard(self, *, count: int, last_token: int, logits: torch.Tensor | None = None) -> None:
        """Forget the last `count` tokens appended (rejected drafts): pending ones are dropped, processed ones cut
        from the KV cache, so nothing kept is recomputed. `last_token` is the last token kept; `logits` [V], when
        given, are the next-token logits after it (they then predict the next token appended)."""
        if not 0 <= count < self.processed + len(self._pending):
            raise ValueError(f"discard count={count} outside [0, {self.processed + len(self._pending) - 1}]")
        unprocessed = min(count, len(self._pending))
        del self._pending[len(self._pending) - unprocessed:]
        if count > unprocessed:
            self.processed -= count - unprocessed
            self._cache.crop(-(count - unprocessed))  # transformers 5: a negative count of tokens to remove
            self._chunk = None  # the chunks this session fed are no longer its history: leave the shared path
            self._last_token = int(last_token)
            self._logits = logits
        elif unprocessed and not self._pending:
            self._logits = self._last_logits  # back where the first dropped token was appended

    def next_logits(self, *, score: bool = False) -> torch.Tensor:
        """Next-token logits [V] (float32, CPU) given everything appended so far; catches up in one forward pass.

        With `score`, also fills `pending_probs` with the model's probability of each token it caught up on.
        """
        if self._logits is None:
            forward_sessions([self], score=score)
        return self._logits  # type: ignore[return-value]

    def _finish(self, *, hidden: torch.Tensor, logits: torch.Tensor, score: bool, batch_size: int,
                forward_s: float, earlier: torch.Tensor | None = None, scoring_s: float = 0.0) -> None:
        """Take the pass's results: hidden states [n, H] of this session's new tokens and the next-token logits
        [V] (float32, CPU) from the last one; score the new tokens if asked. A computed pass hands over `earlier`
        [m, V] (float32, CPU), the logits after the last m new tokens but the last, that its one output projection
        already made (m covers the rows asked for, and all n - 1 when scoring), with `scoring_s` of its time; a
        replayed one does not, and they are projected here from `hidden`."""
        self._logits = logits
        self.row_logits = None
        if self._rows > 1:  # the block's earlier rows: part of the pass (the LM head over those positions)
            start = time.perf_counter()
            if earlier is not None:  # the batched pass's projection: its last rows - 1 (or all n - 1) rows
                rows = earlier[max(earlier.shape[0] - (self._rows - 1), 0):]
            else:
                rows = self._model.get_output_embeddings()(hidden[-self._rows:-1]).float().cpu()  # [<= rows-1, V]
            if rows.shape[0] < self._rows - 1:  # the first row predicted the first pending token already
                rows = torch.cat([self._last_logits.unsqueeze(0), rows])
            self.row_logits = torch.cat([rows, logits.unsqueeze(0)])  # [rows, V]
            forward_s += time.perf_counter() - start
            self._rows = 1
        self.timing = StepTiming(forward_s=forward_s, tokens=len(self._pending), batch_size=batch_size)
        self.pending_probs, self.pending_rows = [], []
        if score:  # off the clocks: the output projection of the other positions
            start = time.perf_counter()
            if earlier is None:
                head = self._model.get_output_embeddings()
                earlier = head(hidden[:-1]).float().cpu() if hidden.shape[0] > 1 else hidden.new_zeros(0)  # [n-1, V]
            predictors = [self._last_logits] if self._last_logits is not None else [None]
            predictors += list(earlier)
            skip = self._unscored  # a deferred prompt: only what was appended after it is scored
            self.pending_probs = [
                float(torch.softmax(z, dim=-1)[tok]) if z is not None else float("nan")
                for z, tok in zip(predictors[skip:], self._pending[skip:], strict=True)
            ]
            self.pending_rows = predictors[skip:]
            self.timing.scoring_s = scoring_s + time.perf_counter() - start
        self.processed += len(self._pending)
        self._last_token = self._pending[-1]
        self._pending = []
        self._unscored = 0


def _check_plain_output_head(model: torch.nn.Module) -> None:
    """The step API applies the output embedding itself (to score caught-up tokens off the clock); a model that
    post-processes its logits would be scored wrongly, so it is refused, naming the setting."""
    config = model.config
    for name, neutral in (("final_logit_softcapping", None), ("logit_scale", None), ("logits_scaling", 1.0)):
        value = getattr(config, name, neutral)
        if value is not None and value != neutral:
            raise ConfigError(f"{type(model).__name__} sets config.{name}={value}: models that post-process their "
                              "logits are not supported by the step API (uhlm_ray.models.session)")


# What one more forward pass costs, in padded token rows: a pass reads every weight once whatever its size, and on
# a CPU each further row costs about 1/12 of that (Qwen2.5 1.5B, float32, 2 cores: 294 ms for 1 row, +17-32 ms a
# row); on a GPU the pass is memory-bound far beyond any batch here, so one pass is always cheaper.
PASS_OVERHEAD_ROWS = {"cpu": 12, "cuda": 4096}


def pass_groups(lengths: list[int], *, overhead_rows: int) -> list[list[int]]:
    """Split sessions with `lengths` new tokens into padded passes (lists of indices, each sorted by length) that
    minimise the total cost, sum over passes of overhead_rows + size x longest: padding one long catch-up (a
    U-HLM device that skipped several rounds) onto short ones wastes rows, another pass costs the weights' read."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    best = [0.0] + [math.inf] * len(order)  # best[j]: the cheapest split of the j shortest
    cut = [0] * (len(order) + 1)
    for j in range(1, len(order) + 1):
        for i in range(j):  # the last pass holds order[i:j], padded to lengths[order[j - 1]]
            cost = best[i] + overhead_rows + (j - i) * lengths[order[j - 1]]
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], len(order)
    while j:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]


@torch.inference_mode()
def forward_sessions(sessions: list[CausalSession], *, score: bool = False) -> None:
    """Catch every session that has pending tokens up, in as few forward passes of their shared model as pays:
    one padded pass, unless padding short catch-ups to a long one costs more than a second pass (`pass_groups`).

    Sessions already `ready` are left alone. The timing each session records is the whole pass it was in.
    """
    todo = [s for s in sessions if not s.ready]
    if not todo:
        return
    if any(s._model is not todo[0]._model for s in todo):
        raise ValueError("forward_sessions: every session must use the same model")
    if any(not s._pending for s in todo):
        raise RuntimeError("next_logits() on a session with nothing to process")
    overhead = PASS_OVERHEAD_ROWS.get(todo[0]._device.type, PASS_OVERHEAD_ROWS["cuda"])
    for group in pass_groups([len(s._pending) for s in todo], overhead_rows=overhead):
        _forward_batch([todo[i] for i in group], score=score)


def _forward_batch(todo: list[CausalSession], *, score: bool) -> None:
    """One forward pass for sessions of one model, left-padded to a common length; a batch of one is the solo path."""
    model, device = todo[0]._model, todo[0]._device
    start = time.perf_counter()
    if len(todo) == 1:
        _forward_solo(todo[0], score=score)
        return

    for s in todo:
        s._chunk = None  # a padded batch rounds differently from a solo pass: no longer shareable
    batch, past_len = len(todo), max(s.processed for s in todo)
    new_len = max(len(s._pending) for s in todo)
    # left-pad both the cache part and the new part, so every sequence's last token sits in the last column
    ids = torch.zeros(batch, new_len, dtype=torch.long, device=device)  # [B, N]
    positions = torch.zeros(batch, new_len, dtype=torch.long, device=device)  # [B, N]
    mask = torch.zeros(batch, past_len + new_len, dtype=torch.long, device=device)  # [B, P + N]
    for i, s in enumerate(todo):
        n = len(s._pending)
        ids[i, new_len - n:] = torch.tensor(s._pending, device=device)
        positions[i, new_len - n:] = torch.arange(s.processed, s.processed + n, device=device)
        mask[i, past_len - s.processed:past_len] = 1
        mask[i, past_len + new_len - n:] = 1
    cache = DynamicCache(config=model.config)
    for layer in range(len(todo[0]._cache.layers)):
        keys = [s._cache.layers[layer].keys for s in todo]  # each [1, H_kv, L_i, D]
        values = [s._cache.layers[layer].values for s in todo]
        cache.update(_left_pad(keys, past_len), _left_pad(values, past_len), layer)  # [B, H_kv, P, D]
    out = model.get_decoder()(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                              use_cache=True)
    decoder_s = time.perf_counter() - start
    lengths = [len(s._pending) for s in todo]
    hidden = out.last_hidden_state  # [B, N, H], each session's new tokens in its last n columns
    logits, earlier, head_s, scoring_s = _project(todo, hidden=[hidden[i, -n:] for i, n in enumerate(lengths)],
                                                  score=score)
    for i, s in enumerate(todo):
        n = lengths[i]
        for layer, batched in enumerate(out.cache.layers):
            # this session's new keys/values [1, H_kv, n, D] appended to its own unpadded cache
            s._cache.update(batched.keys[i:i + 1, :, -n:], batched.values[i:i + 1, :, -n:], layer)
        s._finish(hidden=hidden[i, -n:], logits=logits[i], score=score, batch_size=batch,
                  forward_s=decoder_s + head_s, earlier=earlier[i], scoring_s=scoring_s[i])


def _project(todo: list[CausalSession], *, hidden: list[torch.Tensor], score: bool
             ) -> tuple[torch.Tensor, list[torch.Tensor], float, list[float]]:
    """One output projection for a pass: each session's last position and, before it, the positions whose logits
    it needs (a block's earlier rows, on the clock; every caught-up token when scoring, off it), since each further
    call would read the whole [V, H] head again. `hidden`: each session's [n_i, H] new positions.

    Returns the last logits [B, V] and each session's earlier rows [m_i, V] (float32, CPU), the head's seconds on
    the pass's clock, and each session's share of the rest (scoring)."""
    clocked = [min(s._rows, h.shape[0]) - 1 for s, h in zip(todo, hidden, strict=True)]
    needed = [h.shape[0] - 1 if score else c for h, c in zip(hidden, clocked, strict=True)]
    rows = torch.cat([h[h.shape[0] - 1 - m:h.shape[0] - 1] for h, m in zip(hidden, needed, strict=True)]
                     + [h[-1:] for h in hidden])  # [sum(m) + B, H]
    start = time.perf_counter()
    projected = todo[0]._model.get_output_embeddings()(rows).float().cpu()  # [sum(m) + B, V]
    head_s = time.perf_counter() - start
    on_clock = (len(todo) + sum(clocked)) / projected.shape[0]  # the pass's share of the head's time
    offsets = [0, *itertools.accumulate(needed)]
    earlier = [projected[offsets[i]:offsets[i + 1]] for i in range(len(todo))]
    scoring_s = [head_s * (1 - on_clock) * m / max(sum(needed), 1) for m in needed]
    return projected[-len(todo):], earlier, head_s * on_clock, scoring_s


def _forward_solo(s: CausalSession, *, score: bool) -> None:
    """One session's pending tokens in one pass, or the same pass's results from the prefix cache."""
    model, device = s._model, s._device
    start = time.perf_counter()
    key = chunk_key(parent=s._chunk, tokens=s._pending) if s._chunk is not None else None
    entry = s._prefixes.get(key) if s._prefixes is not None and key is not None else None
    if entry is not None:
        for layer, (k, v) in enumerate(zip(entry.keys, entry.values, strict=True)):
            s._cache.update(k.to(device), v.to(device), layer)
        hidden, head_logits = entry.hidden.to(device), entry.logits
        forward_s, earlier, scoring_s = entry.forward_s, None, 0.0  # earlier rows, if asked, from the stored hidden
    else:
        ids = torch.tensor([s._pending], dtype=torch.long, device=device)  # [1, n]
        out = model.get_decoder()(input_ids=ids, cache=s._cache, use_cache=True)
        s._cache = out.cache
        hidden = out.last_hidden_state[0]  # [n, H]
        decoder_s = time.perf_counter() - start
        last, (earlier,), head_s, (scoring_s,) = _project([s], hidden=[hidden], score=score)
        head_logits = last[0]  # [V] float32, CPU
        forward_s = decoder_s + head_s
        if s._prefixes is not None and key is not None:
            n = len(s._pending)
            s._prefixes.put(key, ChunkEntry(
                keys=[layer.keys[:, :, -n:].clone() for layer in s._cache.layers],  # [1, H_kv, n, D] each
                values=[layer.values[:, :, -n:].clone() for layer in s._cache.layers],
                hidden=hidden.clone(), logits=head_logits.clone(), forward_s=forward_s))
    replayed_s = forward_s - (time.perf_counter() - start) if entry is not None else 0.0
    s._chunk = key
    s._finish(hidden=hidden, logits=head_logits.float().cpu(), score=score, batch_size=1, forward_s=forward_s,
              earlier=earlier, scoring_s=scoring_s)
    s.timing.replayed_s = replayed_s


def _left_pad(tensors: list[torch.Tensor], length: int) -> torch.Tensor:
    """[1, H, L_i, D] each -> [B, H, length, D], zeros on the left."""
    first = tensors[0]
    out = first.new_zeros(len(tensors), first.shape[1], length, first.shape[3])
    for i, t in enumerate(tensors):
        if t.shape[2]:
            out[i, :, length - t.shape[2]:] = t[0]
    return out


@torch.inference_mode()
def mc_dropout_logits(session: CausalSession, *, dropout_probs: list[float], seed: int) -> torch.Tensor:
    """K stochastic passes for MC-dropout uncertainty: next-token logits [K, V] (float32, CPU).

    The Qwen2 and Llama architectures have no active dropout, so it is applied here, on each decoder block's output,
    with pass k's probability dropout_probs[k] (inverted dropout: kept units scaled by 1 / (1 - p)). Only the last
    token is re-run with dropout, against the clean KV cache of the prefix: the K passes then cost one batched
    one-token forward instead of K re-encodings of the whole sequence. The session itself is left unchanged.
    """
    if session._pending or session._logits is None:
        raise RuntimeError("mc_dropout_logits needs a session whose next logits are computed")
    model, device = session._model, session._device
    last = session._last_token
    k = len(dropout_probs)
    cache = copy.deepcopy(session._cache)
    cache.crop(-1)  # drop the last token: it is re-run below, with dropout
    cache.batch_repeat_interleave(k)
    keep = 1.0 - torch.tensor(dropout_probs, dtype=torch.float32, device=device)  # [K]
    generator = torch.Generator(device=device).manual_seed(seed)

    def drop(_module, _inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output  # [K, 1, H]
        mask = torch.rand(hidden.shape, generator=generator, device=device) < keep.view(-1, 1, 1)
        dropped = hidden * mask.to(hidden.dtype) / keep.view(-1, 1, 1).to(hidden.dtype)
        return (dropped, *output[1:]) if isinstance(output, tuple) else dropped

    hooks = [layer.register_forward_hook(drop) for layer in model.get_decoder().layers]
    try:
        ids = torch.full((k, 1), last, dtype=torch.long, device=device)  # [K, 1]
        positions = torch.full((k, 1), session.processed - 1, dtype=torch.long, device=device)  # [K, 1]
        out = model.get_decoder()(input_ids=ids, position_ids=positions, cache=cache, use_cache=True)
    finally:
        for hook in hooks:
            hook.remove()
    return model.get_output_embeddings()(out.last_hidden_state[:, -1]).float().cpu()  # [K, V]


@torch.inference_mode()
def full_recompute_logits(*, model: LoadedModel, token_ids: list[int]) -> torch.Tensor:
    """Next-token logits [V] (float32) from one cache-free forward over the whole sequence; the reference in tests."""
    device = next(model.model.parameters()).device
    ids = torch.tensor([token_ids], dtype=torch.long, device=device)  # [1, n]
    return model.model(input_ids=ids, use_cache=False).logits[0, -1].float().cpu()


@torch.inference_mode()
def response_logits(*, model: LoadedModel, prompt_ids: list[int], response: list[int]) -> torch.Tensor:
    """The model teacher-forced over a response: logits [len(response), V] (float32) from one cache-free forward
    over prompt + response, row j scoring response token j given everything before it."""
    device = next(model.model.parameters()).device
    ids = torch.tensor([prompt_ids + response], dtype=torch.long, device=device)  # [1, P + R]
    return model.model(input_ids=ids, use_cache=False).logits[0, len(prompt_ids) - 1:-1].float().cpu()  # [R, V]
