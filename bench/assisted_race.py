"""Wall-clock race on the embedded pair: the LLM alone, Hugging Face assisted generation and our hybrid methods.

    .venv/bin/python bench/assisted_race.py [--prompts 3] [--tokens 32] [--repeats 3] \
        [--only 'fixed n = 3|coupled ids'] [overrides...]

Same prompts (chat-templated built-ins), same max new tokens, same machine, same process, plain sampling at
temperature 1 everywhere (no top-k/top-p, no repetition penalty), measured in one run, every row `--repeats` times
(round robin, so slow spells of a noisy machine spread over all rows); the table shows medians:

- LLM alone: `llm.generate(do_sample=True)`.
- HF assisted: `llm.generate(assistant_model=slm, do_sample=True)` (speculative sampling, lossless), with its
  default assistant settings and with a few tuned ones (the fastest is marked and is the reference of the last
  ratio column).
- Ours: HLM (lossless, every token verified), U-HLM and CU-HLM at their default thresholds, and the block method
  (lossless) with the ids and truncated payloads, the uncertainty stop and a fixed n, and with shared-noise
  (coupled) ids; decoded by the core loop with
  the channel at zero latency (the uplink is modelled, never slept, so it is not on the wall clock), no
  evaluation-mode scoring and no shared passes.

Each time includes the prompt prefill. Prints tokens per second, the ratios to the LLM alone and to HF assisted's
fastest setting, and for our methods the share of round time outside model forward passes (framework overhead).
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

import torch
from transformers import GenerationConfig

from uhlm_ray.config import load_config
from uhlm_ray.decode import decode_prompt, make_policy
from uhlm_ray.experiments.datasets import load_examples
from uhlm_ray.measures.clock import overhead_share
from uhlm_ray.models import load_pair
from uhlm_ray.models.chat import chat_prompt_ids

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


class ForwardMeter:
    """Counts the forward passes of one model's decoder and times them with its output head, by module hooks."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls, self.seconds = 0, 0.0
        self._started: float | None = None
        for module, counts in ((model.get_decoder(), True), (model.get_output_embeddings(), False)):
            module.register_forward_pre_hook(self._start)
            module.register_forward_hook(lambda *_, counts=counts: self._stop(counts=counts))

    def _start(self, *_) -> None:
        self._started = time.perf_counter()

    def _stop(self, *, counts: bool) -> None:
        self.seconds += time.perf_counter() - self._started
        self.calls += counts

    def take(self) -> tuple[int, float]:
        """(forward passes, seconds) since the last take."""
        out = (self.calls, self.seconds)
        self.calls, self.seconds = 0, 0.0
        return out


def hf_generate(*, pair, prompts: list[list[int]], tokens: int, assistant: dict | None) -> tuple[int, float, None]:
    """Generated tokens and seconds over all prompts; `assistant` None is the LLM alone."""
    eos = sorted(pair.eos_token_ids)
    sampling = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "eos_token_id": eos,
                "pad_token_id": eos[0]}
    config = GenerationConfig(max_new_tokens=tokens, **sampling)
    # HF reads the assistant's settings from the assistant model's own generation config (and the heuristic
    # schedule writes back to it), so each run sets it afresh; {} leaves HF's defaults
    pair.slm.model.generation_config = GenerationConfig(**sampling, **(assistant or {}))
    produced, seconds = 0, 0.0
    for i, ids in enumerate(prompts):
        torch.manual_seed(i)
        input_ids = torch.tensor([ids])  # [1, n]
        start = time.perf_counter()
        with torch.inference_mode():
            out = pair.llm.model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                                          generation_config=config,
                                          assistant_model=pair.slm.model if assistant is not None else None)
        seconds += time.perf_counter() - start
        produced += out.shape[1] - input_ids.shape[1]
    return produced, seconds, None, 0.0


def ours(*, pair, prompts: list[list[int]], method: str, cfg) -> tuple[int, float, float, float]:
    """Tokens, seconds, the share of round time outside forward passes and the uncertainty measure's seconds, for
    one of our methods."""
    produced, seconds, records = 0, 0.0, []
    policy = make_policy(method=method, cfg=cfg)
    for i, ids in enumerate(prompts):
        start = time.perf_counter()
        tokens, prompt_records, _, _ = decode_prompt(pair=pair, prompt_ids=ids, prompt_index=i, method=method,
                                                     cfg=cfg, policy=policy)
        seconds += time.perf_counter() - start
        produced += len(tokens)
        records += prompt_records
    return produced, seconds, overhead_share(records), sum(r.tau_uncertainty_s for r in records)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="", help="'|'-separated label parts (labels hold commas): keep only our "
                        "rows whose label contains one (the LLM alone and HF's rows always run)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    base = [f"data.n_prompts={args.prompts}", f"decode.max_new_tokens={args.tokens}", "decode.evaluation_methods=[]",
            "runtime.share_prefixes=false", *args.overrides]
    cfg = load_config(overrides=base)
    pair = load_pair(cfg.model)
    prompts = [chat_prompt_ids(tokenizer=pair.tokenizer, prompt=e.prompt) for e in load_examples(cfg.data)]
    hf_generate(pair=pair, prompts=prompts[:1], tokens=4, assistant={})  # warm-up: first-call costs off the table

    defaults = GenerationConfig._get_default_generation_params()  # what HF fills in for unset settings
    rows: list[tuple[str, str, Callable[[], tuple[int, float, float | None, float]]]] = [
        ("llm", "LLM alone (HF generate)",
         lambda: hf_generate(pair=pair, prompts=prompts, tokens=args.tokens, assistant=None)),
        ("hf", f"HF assisted, default ({defaults['num_assistant_tokens']} tokens, "
               f"{defaults['num_assistant_tokens_schedule']}, confidence stop "
               f"{defaults['assistant_confidence_threshold']})",
         lambda: hf_generate(pair=pair, prompts=prompts, tokens=args.tokens, assistant={})),
    ]
    for setting in TUNED:
        rows.append(("hf", f"HF assisted, {setting['num_assistant_tokens']} tokens, "
                           f"{setting['num_assistant_tokens_schedule']}",
                     lambda s=setting: hf_generate(pair=pair, prompts=prompts, tokens=args.tokens, assistant=s)))
    for method, label in (("hlm", "ours: HLM (lossless)"), ("u_hlm", f"ours: U-HLM (u_th {cfg.policy.u_th})"),
                          ("cu_hlm", f"ours: CU-HLM ({cfg.cu_hlm.measure} <= {cfg.cu_hlm.u_th}, "
                                     f"{cfg.cu_hlm.truncation} {cfg.cu_hlm.top_p})")):
        rows.append(("ours", label, lambda m=method: ours(pair=pair, prompts=prompts, method=m, cfg=cfg)))
    for label, overrides in BLOCKS:
        block_cfg = load_config(overrides=[*base, *overrides])
        rows.append(("block", f"ours: Block-HLM (lossless), {label}",
                     lambda c=block_cfg: ours(pair=pair, prompts=prompts, method="block_hlm", cfg=c)))

    if args.only:
        wanted = [w.strip() for w in args.only.split("|") if w.strip()]
        rows = [r for r in rows if r[0] in ("llm", "hf") or any(w in r[1] for w in wanted)]
    meters = {"slm": ForwardMeter(pair.slm.model), "llm": ForwardMeter(pair.llm.model)}
    rates: dict[int, list[float]] = {i: [] for i in range(len(rows))}
    shares: dict[int, list[float]] = {i: [] for i in range(len(rows))}
    per_token: dict[int, list[dict[str, float]]] = {i: [] for i in range(len(rows))}
    produced: dict[int, int] = {}
    for repeat in range(args.repeats):
        for i, (_, label, run) in enumerate(rows):
            for meter in meters.values():
                meter.take()
            n, seconds, share, measure_s = run()
            (slm_calls, slm_s), (llm_calls, llm_s) = meters["slm"].take(), meters["llm"].take()
            per_token[i].append({"slm_fwd": slm_calls / n, "slm_ms": 1e3 * slm_s / max(slm_calls, 1),
                                 "llm_fwd": llm_calls / n, "llm_ms": 1e3 * llm_s / max(llm_calls, 1),
                                 "measure_ms": 1e3 * measure_s / n,
                                 "rest_ms": 1e3 * (seconds - slm_s - llm_s - measure_s) / n,
                                 "total_ms": 1e3 * seconds / n})
            rates[i].append(n / seconds)
            produced[i] = n
            if share is not None:
                shares[i].append(share)
            print(f"[race] repeat {repeat + 1}/{args.repeats}: {label}: {n / seconds:.2f} tok/s", flush=True)

    median = {i: statistics.median(r) for i, r in rates.items()}
    llm = median[0]
    hf = [i for i, (kind, _, _) in enumerate(rows) if kind == "hf"]
    fastest = max(hf[1:], key=lambda i: median[i])  # the tuned settings
    print(f"\n{len(prompts)} prompts x up to {args.tokens} new tokens, {torch.get_num_threads()} torch threads, "
          f"{next(pair.llm.model.parameters()).dtype}, median of {args.repeats} repeats")
    print("| run | tokens | tok/s (median) | x LLM alone | x HF assisted fastest | overhead share |")
    print("|---|---:|---:|---:|---:|---:|")
    for i, (_, label, _) in enumerate(rows):
        share = f"{statistics.median(shares[i]):.1%}" if shares[i] else "-"
        mark = " (tuned: fastest)" if i == fastest else ""
        print(f"| {label}{mark} | {produced[i]} | {median[i]:.2f} | {median[i] / llm:.2f} | "
              f"{median[i] / median[fastest]:.2f} | {share} |")

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
