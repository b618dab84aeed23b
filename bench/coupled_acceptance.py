"""Acceptance per block position against what theory says, on the embedded pair: coupled ids, point-mass ids and
truncated uploads, decoded in one run on the same prompts.

    .venv/bin/python bench/coupled_acceptance.py [--prompts 4] [--tokens 32] [--drafts 3] [overrides...]

Each upload is decoded with the block method at a fixed n (`block.stop=fixed`, every draft verified). Then, for each
run, one cache-free forward of each model over prompt + response gives x_j and y_j at every judged draft's position
(the drafts up to and including a block's first rejection, whose prefix is the response's). Per block position k the
table prints the drafts judged, the acceptance observed, and from the same positions the mean of
- 1 - TV(q, y): speculative sampling's acceptance with the uploaded q (x~ for truncated, x otherwise);
- (1 - TV(x, y)) / (1 + TV(x, y)): the coupled rule's lower bound (Daliri, Musco and Suresh, arXiv 2408.07978);
- sum_v x_v y_v: a point mass's acceptance E_x[y_d].
Coupled acceptance should sit between the bound and 1 - TV; point-mass ids at sum x y; truncated at 1 - TV(x~, y).
Acceptance carries a 95% Wilson interval (drafts treated as independent, which they are not quite).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from scipy.stats import binomtest

from uhlm_ray.config import EvaluateConfig, load_config
from uhlm_ray.experiments.datasets import load_examples
from uhlm_ray.experiments.evaluate import run_method
from uhlm_ray.link.payload import truncate
from uhlm_ray.models import LoadedModel, load_pair, response_logits
from uhlm_ray.models.chat import chat_prompt_ids
from uhlm_ray.records import BlockRecord, PromptResult

UPLOADS = {  # label: overrides
    "coupled ids": ["decode.sampling=coupled", "block.payload=ids"],
    "point-mass ids": ["block.payload=ids"],
    "truncated": ["block.payload=truncated"],
}


def next_token_probs(*, model: LoadedModel, prompt: list[int], response: list[int]) -> torch.Tensor:
    """[len(response), V] float64: row j is the model's distribution of response token j given what precedes it."""
    return torch.softmax(response_logits(model=model, prompt_ids=prompt, response=response).double(), dim=-1)


def judged(record: BlockRecord) -> list[tuple[int, int, bool]]:
    """(block position k from 0, response position from 1, kept) of each draft the LLM judged in its context."""
    a, n = record.num_accepted, len(record.drafts)
    return [(i, record.position + i, i < a) for i in range(min(a + 1, n))] if record.sent else []


def position_rows(*, results: list[PromptResult], cfg: EvaluateConfig, pair, examples) -> dict[int, list[tuple]]:
    """Per block position: (kept, 1 - TV(q, y), coupled bound, sum x y) of every judged draft."""
    rows: dict[int, list[tuple]] = {}
    for res in results:
        prompt = chat_prompt_ids(tokenizer=pair.tokenizer, prompt=examples[res.prompt_index].prompt)
        assert len(prompt) == res.prompt_tokens, "the prompt is not the one decoded"
        x_all = next_token_probs(model=pair.slm, prompt=prompt, response=res.tokens)  # [T, V]
        y_all = next_token_probs(model=pair.llm, prompt=prompt, response=res.tokens)  # [T, V]
        for record in res.records:
            for k, position, kept in judged(record):
                if position > len(res.tokens):  # cut at the token budget
                    continue
                x, y = x_all[position - 1], y_all[position - 1]  # [V] each
                q = x if cfg.block.payload != "truncated" else truncate(
                    probs=x, truncation=cfg.block.truncation, top_k=cfg.block.top_k, top_p=cfg.block.top_p).probs
                tv_q = 0.5 * float((q - y).abs().sum())
                tv_x = 0.5 * float((x - y).abs().sum())
                rows.setdefault(k, []).append((kept, 1.0 - tv_q, (1.0 - tv_x) / (1.0 + tv_x), float((x * y).sum())))
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--drafts", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args(argv)
    base = [f"data.n_prompts={args.prompts}", f"decode.max_new_tokens={args.tokens}", "decode.evaluation_methods=[]",
            "block.stop=fixed", f"block.fixed_drafts={args.drafts}", f"block.max_drafts={max(args.drafts, 1)}",
            "model.dtype=float32", *args.overrides]
    cfg0 = load_config(overrides=base)
    pair = load_pair(cfg0.model)
    examples = load_examples(cfg0.data)
    print(f"{args.prompts} prompts ({cfg0.data.name}) x up to {args.tokens} tokens, blocks of n = {args.drafts}, "
          f"float32\n")
    print("| upload | block position | drafts judged | acceptance [95% Wilson] | mean 1 - TV(q, y) "
          "| mean (1-TV)/(1+TV) | mean sum x y |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, overrides in UPLOADS.items():
        cfg = load_config(overrides=[*base, *overrides])
        start = time.perf_counter()
        results = run_method(pair=pair, examples=examples, method="block_hlm", cfg=cfg, encoder=None, store=None)
        print(f"[acceptance] decoded {label} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        rows = position_rows(results=results, cfg=cfg, pair=pair, examples=examples)
        every = [row for k in sorted(rows) for row in rows[k]]
        for k, name in [*((k, str(k + 1)) for k in sorted(rows)), (None, "all")]:
            picked = rows[k] if k is not None else every
            mean = [sum(r[i] for r in picked) / len(picked) for i in range(4)]
            ci = binomtest(sum(r[0] for r in picked), len(picked)).proportion_ci(method="wilson")
            print(f"| {label} | {name} | {len(picked)} | {mean[0]:.3f} [{ci.low:.3f}, {ci.high:.3f}] | "
                  f"{mean[1]:.3f} | {mean[2]:.3f} | {mean[3]:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
