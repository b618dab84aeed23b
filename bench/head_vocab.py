"""Which draft vocabulary: acceptance, SLM step time and full-upload size against `model.slm_head_vocab` N, measured
in one run on the embedded pair (or any pair: pass model.* overrides).

    .venv/bin/python bench/head_vocab.py [--sizes 4096,8192,16384,32768,65536] [--prompts 16] [--tokens 64] \
        [--repeats 20] [overrides...]

The LLM alone answers the prompts (one lockstep batch, keyed draws). Both models are then teacher-forced over
prompt + response (one cache-free forward each), and for every N the trimmed SLM's distribution x_N (the whole
head's logits on `kept_ids(N)`, renormalised: what `TrimmedHead` gives) is compared with the LLM's y at every
response position:
- 1 - TV(x_N, y) = sum_v min(x_N(v), y(v)): a draft's acceptance under speculative sampling, the most a coupled ids
  upload can reach;
- y's mass outside the kept ids: what no draft can carry any more.
Means over positions with 95% bootstrap intervals over prompts (`clustered_ratio`), and the ratio to the whole
head's acceptance on the same prompts (`clustered_ratio_vs`, paired).

Per N it also times one SLM step with the trimmed head (100-token cache, the model's dtype, median of --repeats),
and the LLM's pass over 1..9 tokens once, and prints the block method's expected speed at its best fixed block
length n under Leviathan et al.'s i.i.d. acceptance model (`expected_speedup`), over the LLM alone; the model
ignores that acceptance varies along a response, so read its ratios, not its levels. The last column is a float32
full upload's size, one probability per kept id (`full_payload_bits(support=...)`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext

import numpy as np
import torch
from transformers import DynamicCache

from uhlm_ray.config import load_config
from uhlm_ray.draft_control import expected_block_tokens
from uhlm_ray.experiments.calibration import median_seconds
from uhlm_ray.experiments.datasets import load_examples
from uhlm_ray.experiments.evaluate import run_method
from uhlm_ray.link.payload import full_payload_bits
from uhlm_ray.measures.intervals import clustered_ratio, clustered_ratio_vs
from uhlm_ray.models import load_pair, response_logits
from uhlm_ray.models.chat import chat_prompt_ids
from uhlm_ray.models.trimmed_head import kept_ids, swapped_head, trimmed_head_of

MAX_DRAFTS = 8


def expected_speedup(*, acceptance: float, drafts: int, tau_slm_s: float, tau_llm_s: Callable[[int], float]) -> float:
    """Leviathan, Kalman and Matias (2023), eq. 1 and Theorem 3.8 in measured costs: a block of n drafts, each
    accepted with probability alpha independently, yields (1 - alpha^(n+1)) / (1 - alpha) tokens in
    n tau_SLM + tau_LLM(n + 1) seconds (the LLM's pass holds the last token and the n drafts); the LLM alone makes a
    token in tau_LLM(1)."""
    tokens = float(expected_block_tokens(drafts=drafts, acceptance=acceptance))
    return tokens / (drafts * tau_slm_s + tau_llm_s(drafts + 1)) * tau_llm_s(1)


@torch.inference_mode()
def step_seconds(model: torch.nn.Module, *, tokens: int, repeats: int) -> float:
    """One pass over `tokens` new tokens on a 100-token cache (cropped back after each pass)."""
    device = next(model.parameters()).device
    context = torch.randint(0, 1000, (1, 100 + tokens), generator=torch.Generator().manual_seed(0)).to(device)
    cache = DynamicCache(config=model.config)
    model(input_ids=context[:, :100], cache=cache, use_cache=True)

    def one_pass() -> None:
        model(input_ids=context[:, 100:], cache=cache, use_cache=True)
        cache.crop(-tokens)

    return median_seconds(one_pass, repeats=repeats)


@torch.inference_mode()
def overlaps(*, pair, prompts: list[list[int]], responses: list[list[int]], sizes: list[int]):
    """Per N (and |V|): [prompt] sums of 1 - TV(x_N, y) and of y's mass outside the kept ids, and [prompt] counts."""
    keeps = {n: kept_ids(tokenizer=pair.tokenizer, vocab_size=pair.vocab_size, keep=n) for n in sizes}
    overlap = {n: np.zeros(len(prompts)) for n in sizes}
    outside = {n: np.zeros(len(prompts)) for n in sizes}
    counts = np.array([len(r) for r in responses], dtype=float)
    for p, (ids, response) in enumerate(zip(prompts, responses, strict=True)):
        if not response:
            continue
        z = response_logits(model=pair.slm, prompt_ids=ids, response=response)  # [m, V] float32, the whole head
        y = response_logits(model=pair.llm, prompt_ids=ids, response=response).softmax(-1)  # [m, V]
        for n, kept in keeps.items():
            x_n = z[:, kept].softmax(-1)  # [m, |kept|]: the trimmed head's distribution on its ids
            y_n = y[:, kept]  # [m, |kept|]
            overlap[n][p] = float(torch.minimum(x_n, y_n).sum())
            outside[n][p] = float((1.0 - y_n.sum(-1)).clamp(min=0.0).sum())  # the whole head's: rounding only
    return keeps, overlap, outside, counts


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="4096,8192,16384,32768,65536")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args(argv)
    if any(o.startswith("model.slm_head_vocab=") for o in args.overrides):
        parser.error("model.slm_head_vocab: this bench trims the whole head itself, to each of --sizes")
    cfg = load_config(overrides=[f"data.n_prompts={args.prompts}", f"decode.max_new_tokens={args.tokens}",
                                 f"runtime.batch_size={args.prompts}", "decode.evaluation_methods=[]",
                                 *args.overrides])
    pair = load_pair(cfg.model)
    examples = load_examples(cfg.data)
    whole = pair.vocab_size
    sizes = [*sorted({int(s) for s in args.sizes.split(",")} - {whole}), whole]
    dtype = next(pair.slm.model.parameters()).dtype

    start = time.perf_counter()
    results = run_method(pair=pair, examples=examples, method="llm", cfg=cfg, encoder=None, store=None)
    prompts = [chat_prompt_ids(tokenizer=pair.tokenizer, prompt=examples[r.prompt_index].prompt) for r in results]
    responses = [r.tokens for r in results]
    keeps, overlap, outside, counts = overlaps(pair=pair, prompts=prompts, responses=responses, sizes=sizes)
    print(f"[head_vocab] LLM answers and teacher forcing in {time.perf_counter() - start:.0f} s", file=sys.stderr)

    llm_s = {k: step_seconds(pair.llm.model, tokens=k, repeats=max(args.repeats // 4, 3))
             for k in range(1, MAX_DRAFTS + 2)}
    slm_s = {}
    for n in sizes:
        with nullcontext() if n == whole else swapped_head(pair.slm, head=trimmed_head_of(pair.slm, keep=n)):
            slm_s[n] = step_seconds(pair.slm.model, tokens=1, repeats=args.repeats)

    print(f"\n{len(results)} prompts ({cfg.data.name}) x up to {args.tokens} tokens of the LLM alone "
          f"({int(counts.sum())} positions), {dtype}; tau_LLM(1) = {1e3 * llm_s[1]:.1f} ms, tau_LLM(9) = "
          f"{1e3 * llm_s[MAX_DRAFTS + 1]:.1f} ms; 95% bootstrap intervals over prompts\n")
    print("| N | ids kept | mean 1 - TV(x_N, y) | x whole head's | LLM mass outside | SLM step ms | x whole head's "
          "| best n | expected x LLM alone | x whole head's | full upload Mbit (float32) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    ref = overlap[whole][:, None], counts[:, None]
    expected = {}  # N -> (speed, n) at the best fixed block length n
    for n in sizes:
        alpha = float(overlap[n].sum() / counts.sum())
        expected[n] = max((expected_speedup(acceptance=alpha, drafts=d, tau_slm_s=slm_s[n],
                                            tau_llm_s=llm_s.__getitem__), d) for d in range(1, MAX_DRAFTS + 1))
    for n in sizes:
        acc, low, high = clustered_ratio(num=overlap[n][:, None], den=counts[:, None])
        vs, vs_low, vs_high = clustered_ratio_vs(num=overlap[n][:, None], den=counts[:, None], ref_num=ref[0],
                                                 ref_den=ref[1])
        out, out_low, out_high = clustered_ratio(num=outside[n][:, None], den=counts[:, None])
        bits = full_payload_bits(vocab_size=whole, cfg=cfg.payload, support=len(keeps[n]))
        speed, best = expected[n]
        label = f"{n:,}" if n != whole else f"{n:,} (whole head)"
        print(f"| {label} | {len(keeps[n]):,} | {acc:.3f} [{low:.3f}, {high:.3f}] | {vs:.3f} [{vs_low:.3f}, "
              f"{vs_high:.3f}] | {out:.4f} [{out_low:.4f}, {out_high:.4f}] | {1e3 * slm_s[n]:.1f} | "
              f"{slm_s[n] / slm_s[whole]:.2f} | {best} | {speed:.2f} | {speed / expected[whole][0]:.2f} | "
              f"{bits / 1e6:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
