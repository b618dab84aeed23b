"""Wall-clock race on the embedded pair: the LLM alone, Hugging Face assisted generation and our hybrid methods.

    .venv/bin/python bench/assisted_race.py [--prompts 3] [--tokens 32] [--repeats 3] \
        [--only 'fixed n = 3|coupled ids'] [overrides...]

Same prompts (chat-templated built-ins), same max new tokens, same machine, same process, plain sampling at
temperature 1 everywhere (no top-k/top-p, no repetition penalty), measured in one run, every row `--repeats` times
(round robin, so slow spells of a noisy machine spread over all rows). Each repeat draws a fresh sample of every
prompt's response (HF from torch's generator seeded by (repeat, prompt), ours with `decode.seed` = repeat): a row's
speed depends on how predictable its sampled text happens to be, and with one sample of a few prompts that alone
moved the ratio to HF by 10% (teacher-forced, HF's responses had a mean 1 - TV of 0.85 and ours 0.79 on the same 8
prompts). Even 3 samples are few: over HF's first three seeds its first drafts were accepted at 0.845, against 0.79
over the next ten (and ours at 0.80), though both draft from the right law on the right prefix (checked against
teacher forcing). Rates pool every repeat (tokens over seconds); the ratios carry 95% bootstrap intervals over
prompts, paired (`clustered_ratio_vs`); `--tv` adds each row's mean 1 - TV(x, y) along its own responses (both models
teacher-forced), the acceptance any exact method could expect on that text, for the LLM alone's row too: every exact
row samples the LLM's law, so their figures differ by sampling noise only.

- LLM alone: `llm.generate(do_sample=True)`.
- HF assisted: `llm.generate(assistant_model=slm, do_sample=True)` (speculative sampling, lossless), with its
  default assistant settings and with a few tuned ones (the fastest is marked and is the reference of the last
  ratio column).
- Ours: HLM (lossless, every token verified), U-HLM and CU-HLM at their default thresholds, and the block method
  (lossless) with the ids and truncated payloads, the uncertainty stop and a fixed n, and with shared-noise
  (coupled) ids; decoded by the core loop with the LLM's prompt processed in its first verification pass, as HF
  does (`runtime.fuse_llm_prefill`), the channel at zero latency (the uplink is modelled, never slept, so it is not
  on the wall clock), no evaluation-mode scoring and no shared passes.

With `--slm-head-vocab N`, every picked tuned-HF and ours row runs a second time with the SLM's output head over its
first N token ids and the special tokens (`model.slm_head_vocab`, FR-Spec's frequency-ranked draft vocabulary):
HF's assistant too, so the trim is credited to whoever uses it; the reference stays HF's fastest untrimmed setting.

Each time includes the prompt prefill. Prints tokens per second, the ratios to the LLM alone and to HF assisted's
fastest setting (the fastest of the tuned ones run), and for our methods the share of round time outside model
forward passes (framework overhead).
Then a per-token breakdown of every run, measured the same way for HF and for us by hooks on each model's decoder
and output head (so every forward counts, whoever calls it): SLM forwards and LLM passes per generated token and
their mean cost, our uncertainty measure's time (from the records), and the rest (sampling, verification
arithmetic, framework), all per generated token (medians over the repeats; prefill included, as in the race).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from transformers import GenerationConfig

from uhlm_ray.config import load_config
from uhlm_ray.decode import decode_prompt, make_policy
from uhlm_ray.experiments.datasets import load_examples
from uhlm_ray.measures.clock import overhead_share
from uhlm_ray.measures.intervals import clustered_ratio_vs
from uhlm_ray.models import load_pair, response_logits
from uhlm_ray.models.chat import chat_prompt_ids
from uhlm_ray.models.forward_meter import ForwardMeter
from uhlm_ray.models.trimmed_head import swapped_head, trimmed_head_of

TUNED = [{"num_assistant_tokens": 3, "num_assistant_tokens_schedule": "constant"},
         {"num_assistant_tokens": 6, "num_assistant_tokens_schedule": "constant"},
         {"num_assistant_tokens": 5, "num_assistant_tokens_schedule": "heuristic"}]
# the block method's rows: (label, overrides)
BLOCKS = [
    ("ids, uncertainty stop u <= 0.2", ["block.payload=ids", "block.stop=uncertainty", "block.stop_u_th=0.2"]),
    ("ids, fixed n = 1", ["block.payload=ids", "block.stop=fixed", "block.fixed_drafts=1"]),
    ("truncated top-p 0.95, uncertainty stop u <= 0.2",
     ["block.payload=truncated", "block.stop=uncertainty", "block.stop_u_th=0.2"]),
    ("truncated top-p 0.95, fixed n = 1", ["block.payload=truncated", "block.stop=fixed", "block.fixed_drafts=1"]),
    ("truncated top-p 0.95, fixed n = 3", ["block.payload=truncated", "block.stop=fixed", "block.fixed_drafts=3"]),
    # HF's own stop (its assistant stops drafting below a confidence of 0.4, whatever num_assistant_tokens says)
    ("truncated top-p 0.95, confidence stop 0.4", ["block.payload=truncated", "block.stop=confidence"]),
    # HF assisted's own algorithm: full distributions verified by speculative sampling, its confidence stop
    ("full, confidence stop 0.4", ["block.payload=full", "block.stop=confidence"]),
    # ... and at HF's fastest setting on a CPU: at most 6 drafts a block, cut by the same confidence stop
    ("full, confidence stop 0.4, up to 6 drafts", ["block.payload=full", "block.stop=confidence",
                                                   "block.max_drafts=6"]),
    # shared-noise sampling (decode.sampling=coupled): ids only, a draft kept iff it is the LLM's race winner
    ("coupled ids, uncertainty stop u <= 0.2",
     ["decode.sampling=coupled", "block.payload=ids", "block.stop=uncertainty", "block.stop_u_th=0.2"]),
    ("coupled ids, fixed n = 3", ["decode.sampling=coupled", "block.payload=ids", "block.stop=fixed",
                                  "block.fixed_drafts=3"]),
    # HF assisted's fastest constant setting on a CPU drafts 6 tokens, and its default stops below confidence 0.4
    ("coupled ids, fixed n = 6", ["decode.sampling=coupled", "block.payload=ids", "block.stop=fixed",
                                  "block.fixed_drafts=6"]),
    ("coupled ids, confidence stop 0.4", ["decode.sampling=coupled", "block.payload=ids", "block.stop=confidence"]),
    # HF assisted's defaults in full: up to 20 drafts a block (num_assistant_tokens), cut by the confidence stop
    ("coupled ids, confidence stop 0.4, up to 20 drafts", ["decode.sampling=coupled", "block.payload=ids",
                                                          "block.stop=confidence", "block.max_drafts=20"]),
]


@dataclass
class Run:
    """One row's run over the prompts: per prompt, its generated tokens, seconds and response ids."""

    tokens: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    responses: list[list[int]] = field(default_factory=list)
    overhead: float | None = None  # our methods: the share of round time outside forward passes
    measure_s: float = 0.0  # our methods: the uncertainty measure's seconds

    def add(self, *, response: list[int], seconds: float) -> None:
        self.tokens.append(len(response))
        self.seconds.append(seconds)
        self.responses.append(response)


def hf_generate(*, pair, prompts: list[list[int]], tokens: int, assistant: dict | None, seed: int) -> Run:
    """HF's generate on every prompt; `assistant` None is the LLM alone."""
    eos = sorted(pair.eos_token_ids)
    sampling = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "eos_token_id": eos,
                "pad_token_id": eos[0]}
    config = GenerationConfig(max_new_tokens=tokens, **sampling)
    # HF reads the assistant's settings from the assistant model's own generation config (and the heuristic
    # schedule writes back to it), so each run sets it afresh; {} leaves HF's defaults
    pair.slm.model.generation_config = GenerationConfig(**sampling, **(assistant or {}))
    run = Run()
    for i, ids in enumerate(prompts):
        torch.manual_seed(seed * 100_003 + i)
        input_ids = torch.tensor([ids])  # [1, n]
        start = time.perf_counter()
        with torch.inference_mode():
            out = pair.llm.model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                                          generation_config=config,
                                          assistant_model=pair.slm.model if assistant is not None else None)
        run.add(response=out[0, input_ids.shape[1]:].tolist(), seconds=time.perf_counter() - start)
    return run


def ours(*, pair, prompts: list[list[int]], method: str, cfg, seed: int) -> Run:
    """One of our methods on every prompt, with `decode.seed` = seed."""
    cfg = replace(cfg, decode=replace(cfg.decode, seed=seed))
    policy = make_policy(method=method, cfg=cfg)
    run, records = Run(), []
    for i, ids in enumerate(prompts):
        start = time.perf_counter()
        tokens, prompt_records, _, _ = decode_prompt(pair=pair, prompt_ids=ids, prompt_index=i, method=method,
                                                     cfg=cfg, policy=policy)
        run.add(response=tokens, seconds=time.perf_counter() - start)
        records += prompt_records
    run.overhead, run.measure_s = overhead_share(records), sum(r.tau_uncertainty_s for r in records)
    return run


def overlap_along(*, pair, prompts: list[list[int]], responses: list[list[int]]) -> float:
    """Mean 1 - TV(x, y) over the response positions, both models teacher-forced on prompt + response: the
    acceptance of one full-distribution draft at each position, so how predictable the sampled text is."""
    total, count = 0.0, 0
    for ids, response in zip(prompts, responses, strict=True):
        if not response:
            continue
        x = response_logits(model=pair.slm, prompt_ids=ids, response=response).softmax(-1)  # [m, V]
        y = response_logits(model=pair.llm, prompt_ids=ids, response=response).softmax(-1)  # [m, V]
        total += float(torch.minimum(x, y).sum(-1).sum())
        count += len(response)
    return total / max(count, 1)


def _through(model, *, head: torch.nn.Module | None, run: Callable[[], Run | float]) -> Run | float:
    """`run()` with the model's output head swapped for `head` (None: its own)."""
    if head is None:
        return run()
    with swapped_head(model, head=head):
        return run()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="runs of every row, each on a fresh sample")
    parser.add_argument("--only", default="", help="'|'-separated label parts (labels hold commas): keep only the "
                        "rows whose label contains one (the LLM alone and HF's default always run, and every tuned "
                        "HF setting when none matches)")
    parser.add_argument("--tv", action="store_true", help="teacher-force both models over every row's responses "
                        "and print their mean 1 - TV (one prefill of each model per response)")
    parser.add_argument("--slm-head-vocab", type=int, default=None, metavar="N",
                        help="also run every picked HF-tuned and ours row with the SLM's head over its first N ids "
                        "(model.slm_head_vocab, uhlm_ray.models.trimmed_head); HF's fastest stays the untrimmed one")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    # one stream: the fast one-row kernel for every row, HF's included (batch invariance buys nothing at batch 1)
    # and the LLM's prompt in its first verification pass, as HF's assisted generation does (one LLM forward fewer)
    base = [f"data.n_prompts={args.prompts}", f"decode.max_new_tokens={args.tokens}", "decode.evaluation_methods=[]",
            "runtime.share_prefixes=false", "runtime.fuse_llm_prefill=true", "model.batch_invariant=false",
            *args.overrides]
    cfg = load_config(overrides=base)
    pair = load_pair(cfg.model)
    prompts = [chat_prompt_ids(tokenizer=pair.tokenizer, prompt=e.prompt) for e in load_examples(cfg.data)]
    hf_generate(pair=pair, prompts=prompts[:1], tokens=4, assistant={}, seed=0)  # warm-up: first calls off the table

    defaults = GenerationConfig._get_default_generation_params()  # what HF fills in for unset settings
    rows: list[tuple[str, str, Callable[[int], Run]]] = [
        ("llm", "LLM alone (HF generate)",
         lambda seed: hf_generate(pair=pair, prompts=prompts, tokens=args.tokens, assistant=None, seed=seed)),
        ("hf", f"HF assisted, default ({defaults['num_assistant_tokens']} tokens, "
               f"{defaults['num_assistant_tokens_schedule']}, confidence stop "
               f"{defaults['assistant_confidence_threshold']})",
         lambda seed: hf_generate(pair=pair, prompts=prompts, tokens=args.tokens, assistant={}, seed=seed)),
    ]
    for setting in TUNED:
        rows.append(("tuned", f"HF assisted, {setting['num_assistant_tokens']} tokens, "
                              f"{setting['num_assistant_tokens_schedule']}",
                     lambda seed, s=setting: hf_generate(pair=pair, prompts=prompts, tokens=args.tokens, assistant=s,
                                                         seed=seed)))
    for method, label in (("hlm", "ours: HLM (lossless)"), ("u_hlm", f"ours: U-HLM (u_th {cfg.policy.u_th})"),
                          ("cu_hlm", f"ours: CU-HLM ({cfg.cu_hlm.measure} <= {cfg.cu_hlm.u_th}, "
                                     f"{cfg.cu_hlm.truncation} {cfg.cu_hlm.top_p})")):
        rows.append(("ours", label, lambda seed, m=method: ours(pair=pair, prompts=prompts, method=m, cfg=cfg,
                                                                seed=seed)))
    for label, overrides in BLOCKS:
        block_cfg = load_config(overrides=[*base, *overrides])
        rows.append(("ours", f"ours: Block-HLM (lossless), {label}",
                     lambda seed, c=block_cfg: ours(pair=pair, prompts=prompts, method="block_hlm", cfg=c,
                                                    seed=seed)))

    if args.only:
        wanted = [w.strip() for w in args.only.split("|") if w.strip()]
        picked = [r for r in rows if r[0] in ("llm", "hf") or any(w in r[1] for w in wanted)]
        if not any(r[0] == "tuned" for r in picked):
            picked = [r for r in rows if r in picked or r[0] == "tuned"]
        rows = picked
    trimmed: set[int] = set()  # rows decoded through the trimmed head
    head = trimmed_head_of(pair.slm, keep=args.slm_head_vocab) if args.slm_head_vocab is not None else None
    if head is not None:
        for kind, label, run_row in list(rows):
            if kind in ("tuned", "ours"):
                trimmed.add(len(rows))
                rows.append((f"{kind}_trimmed", f"{label}, SLM head {args.slm_head_vocab}",
                             lambda seed, f=run_row: _through(pair.slm, head=head, run=lambda: f(seed))))
    meters = {"slm": ForwardMeter(pair.slm.model, heads=(head,) if head is not None else ()),
              "llm": ForwardMeter(pair.llm.model)}
    runs: dict[int, list[Run]] = {i: [] for i in range(len(rows))}
    per_token: dict[int, list[dict[str, float]]] = {i: [] for i in range(len(rows))}
    for repeat in range(args.repeats):
        for i, (_, label, run_row) in enumerate(rows):
            for meter in meters.values():
                meter.take()
            run = run_row(repeat)
            (slm_calls, slm_s), (llm_calls, llm_s) = meters["slm"].take(), meters["llm"].take()
            n, seconds = sum(run.tokens), sum(run.seconds)
            per_token[i].append({"slm_fwd": slm_calls / n, "slm_ms": 1e3 * slm_s / max(slm_calls, 1),
                                 "llm_fwd": llm_calls / n, "llm_ms": 1e3 * llm_s / max(llm_calls, 1),
                                 "measure_ms": 1e3 * run.measure_s / n,
                                 "rest_ms": 1e3 * (seconds - slm_s - llm_s - run.measure_s) / n,
                                 "total_ms": 1e3 * seconds / n})
            runs[i].append(run)
            print(f"[race] repeat {repeat + 1}/{args.repeats}: {label}: {n / seconds:.2f} tok/s", flush=True)

    # [prompt, repeat] tokens and seconds of every row: the units the paired bootstrap resamples by prompt
    tokens = {i: np.array([r.tokens for r in rs]).T for i, rs in runs.items()}
    seconds = {i: np.array([r.seconds for r in rs]).T for i, rs in runs.items()}
    rate = {i: tokens[i].sum() / seconds[i].sum() for i in runs}
    tuned = [i for i, (kind, _, _) in enumerate(rows) if kind == "tuned"]
    fastest = max(tuned, key=lambda i: rate[i])

    def versus(i: int, ref: int) -> str:
        value, low, high = clustered_ratio_vs(num=tokens[i], den=seconds[i], ref_num=tokens[ref],
                                              ref_den=seconds[ref])
        return f"{value:.2f} [{low:.2f}, {high:.2f}]"

    # the LLM alone's row is the reference: every exact row samples the LLM's law, so its texts are as predictable
    def overlap_of(i: int) -> float:
        responses = [resp for r in runs[i] for resp in r.responses]
        return _through(pair.slm, head=head if i in trimmed else None,
                        run=lambda: overlap_along(pair=pair, prompts=prompts * args.repeats, responses=responses))

    overlap = {i: overlap_of(i) for i in range(len(rows)) if args.tv}
    print(f"\n{len(prompts)} prompts x up to {args.tokens} new tokens x {args.repeats} samples, "
          f"{torch.get_num_threads()} torch threads, {next(pair.llm.model.parameters()).dtype}; tok/s pools every "
          "sample, ratios with 95% bootstrap intervals over prompts (paired)")
    print("| run | tokens | tok/s | x LLM alone | x HF assisted fastest | overhead share | mean 1 - TV |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for i, (_, label, _) in enumerate(rows):
        shares = [r.overhead for r in runs[i] if r.overhead is not None]
        share = f"{statistics.median(shares):.1%}" if shares else "-"
        mark = " (tuned: fastest)" if i == fastest else ""
        tv = f"{overlap[i]:.3f}" if i in overlap else "-"
        print(f"| {label}{mark} | {int(tokens[i].sum())} | {rate[i]:.2f} | {versus(i, 0)} | {versus(i, fastest)} | "
              f"{share} | {tv} |")

    print("\nPer generated token (medians over the repeats; SLM / LLM: forward passes of each model and their mean "
          "cost, output head included; measure: our uncertainty measure; rest: sampling, verification arithmetic "
          "and framework):")
    print("| run | SLM fwd | ms per SLM fwd | LLM passes | ms per LLM pass | measure ms | rest ms | ms per token |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for i, (_, label, _) in enumerate(rows):
        m = {k: statistics.median(d[k] for d in per_token[i]) for k in per_token[i][0]}
        print(f"| {label} | {m['slm_fwd']:.2f} | {m['slm_ms']:.1f} | {m['llm_fwd']:.2f} | {m['llm_ms']:.1f} | "
              f"{m['measure_ms']:.1f} | {m['rest_ms']:.1f} | {m['total_ms']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
