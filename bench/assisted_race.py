"""Wall-clock race on the embedded pair: the LLM alone, Hugging Face assisted generation and our hybrid methods.

    .venv/bin/python bench/assisted_race.py [--prompts 3] [--tokens 32] [overrides...]

Same prompts (chat-templated built-ins), same max new tokens, same machine, same process, plain sampling at
temperature 1 everywhere (no top-k/top-p, no repetition penalty), measured in one run:

- LLM alone: `llm.generate(do_sample=True)`.
- HF assisted: `llm.generate(assistant_model=slm, do_sample=True)` (speculative sampling, lossless), with its
  default assistant settings and with a few tuned ones (the fastest is marked).
- Ours: HLM (lossless, every token verified), U-HLM and CU-HLM at their default thresholds, decoded by the core loop
  with the channel at zero latency (the uplink is modelled, never slept, so it is not on the wall clock), no
  evaluation-mode scoring and no shared passes.

Each time includes the prompt prefill. Prints tokens per second, the ratio to the LLM alone, and for our methods the
share of round time outside model forward passes (the framework's overhead).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from transformers import GenerationConfig

from uhlm_ray.config import load_config
from uhlm_ray.datasets import load_examples
from uhlm_ray.decode import chat_prompt_ids, decode_prompt, make_policy
from uhlm_ray.metrics import overhead_share
from uhlm_ray.models import load_pair

TUNED = [{"num_assistant_tokens": 3, "num_assistant_tokens_schedule": "constant"},
         {"num_assistant_tokens": 6, "num_assistant_tokens_schedule": "constant"},
         {"num_assistant_tokens": 5, "num_assistant_tokens_schedule": "heuristic"}]


def hf_generate(*, pair, prompts: list[list[int]], tokens: int, assistant: dict | None) -> tuple[int, float]:
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
    return produced, seconds


def ours(*, pair, prompts: list[list[int]], method: str, cfg) -> tuple[int, float, float]:
    """Tokens, seconds and the share of round time outside forward passes, for one of our methods."""
    produced, seconds, records = 0, 0.0, []
    policy = make_policy(method=method, cfg=cfg)
    for i, ids in enumerate(prompts):
        start = time.perf_counter()
        tokens, prompt_records, _, _ = decode_prompt(pair=pair, prompt_ids=ids, prompt_index=i, method=method,
                                                     cfg=cfg, policy=policy)
        seconds += time.perf_counter() - start
        produced += len(tokens)
        records += prompt_records
    return produced, seconds, overhead_share(records)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    cfg = load_config(overrides=[f"data.n_prompts={args.prompts}", f"decode.max_new_tokens={args.tokens}",
                                 "decode.evaluation_methods=[]", "runtime.share_prefixes=false", *args.overrides])
    pair = load_pair(cfg.model)
    prompts = [chat_prompt_ids(tokenizer=pair.tokenizer, prompt=e.prompt) for e in load_examples(cfg.data)]
    hf_generate(pair=pair, prompts=prompts[:1], tokens=4, assistant={})  # warm-up: first-call costs off the table
    rows: list[tuple[str, int, float, float | None]] = []
    n, s = hf_generate(pair=pair, prompts=prompts, tokens=args.tokens, assistant=None)
    rows.append(("LLM alone (HF generate)", n, s, None))
    defaults = GenerationConfig._get_default_generation_params()  # what HF fills in for unset settings
    n, s = hf_generate(pair=pair, prompts=prompts, tokens=args.tokens, assistant={})
    rows.append((f"HF assisted, default ({defaults['num_assistant_tokens']} tokens, "
                 f"{defaults['num_assistant_tokens_schedule']}, confidence stop "
                 f"{defaults['assistant_confidence_threshold']})", n, s, None))
    tuned = []
    for setting in TUNED:
        n, s = hf_generate(pair=pair, prompts=prompts, tokens=args.tokens, assistant=setting)
        tuned.append((f"HF assisted, {setting['num_assistant_tokens']} tokens, "
                      f"{setting['num_assistant_tokens_schedule']}", n, s, None))
    best = max(tuned, key=lambda row: row[1] / row[2])
    for row in tuned:
        rows.append((row[0] + (" (tuned: fastest)" if row is best else ""), *row[1:]))
    for method, label in (("hlm", "ours: HLM (lossless)"), ("u_hlm", f"ours: U-HLM (u_th {cfg.policy.u_th})"),
                          ("cu_hlm", f"ours: CU-HLM ({cfg.cu_hlm.measure} <= {cfg.cu_hlm.u_th}, "
                                     f"{cfg.cu_hlm.truncation} {cfg.cu_hlm.top_p})")):
        n, s, overhead = ours(pair=pair, prompts=prompts, method=method, cfg=cfg)
        rows.append((label, n, s, overhead))

    base = rows[0][1] / rows[0][2]
    print(f"\n{len(prompts)} prompts x up to {args.tokens} new tokens, {torch.get_num_threads()} torch threads, "
          f"{next(pair.llm.model.parameters()).dtype}")
    print("| run | tokens | seconds | tok/s | x LLM alone | overhead share |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, n, s, overhead in rows:
        share = "-" if overhead is None else f"{overhead:.1%}"
        print(f"| {label} | {n} | {s:.1f} | {n / s:.2f} | {n / s / base:.2f} | {share} |")
    print(f"(median tok/s over the HF assisted settings: "
          f"{statistics.median(r[1] / r[2] for r in rows[1:5]):.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
