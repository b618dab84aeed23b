"""Who should multiply a CPU model's float32 matrices: torch's default (MKL's sgemm) or oneDNN
(`model.linear_backend`, uhlm_ray/models/linear_backend.py). Both measured in one run on this machine.

    .venv/bin/python bench/linear_backend.py [--rows 1,4,8,16,32] [--repeats 5] [--model] [overrides...]

Printed: the median milliseconds of one product per shape of Qwen2.5 1.5B (attention projection, MLP up and down,
output head over 151,936 tokens) and number of rows, for each backend, with the ratio torch / oneDNN. With
`--model`, also one decoder step of the configured LLM (the embedded 1.5B by default) at those batch sizes against a
100-token cache, and a 45-token prefill, per float32 backend and in bf16 (which `model.dtype=auto` picks on a CPU
with bf16 units), with the tokens per second of each batch size against the smallest one of the same kernel.
"""

from __future__ import annotations

import argparse
import sys

import torch

from uhlm_ray.experiments.calibration import median_seconds
from uhlm_ray.models.linear_backend import install_linear_backend

SHAPES = {"attention 1536 -> 1536": (1536, 1536), "MLP up 1536 -> 8960": (1536, 8960),
          "MLP down 8960 -> 1536": (8960, 1536), "output head 1536 -> 151936": (1536, 151_936)}


@torch.inference_mode()
def products(rows: list[int], repeats: int) -> None:
    print("| product | rows | torch ms | oneDNN ms | torch / oneDNN |\n|---|---:|---:|---:|---:|")
    for label, (fan_in, fan_out) in SHAPES.items():
        layer = torch.nn.Linear(fan_in, fan_out, bias=False)
        for r in rows:
            x = torch.randn(r, fan_in)
            install_linear_backend(layer, backend="torch")
            plain = 1e3 * median_seconds(lambda: layer(x), repeats=repeats)  # noqa: B023 - called at once
            install_linear_backend(layer, backend="onednn")
            onednn = 1e3 * median_seconds(lambda: layer(x), repeats=repeats)  # noqa: B023
            print(f"| {label} | {r} | {plain:.1f} | {onednn:.1f} | {plain / onednn:.2f}x |", flush=True)


@torch.inference_mode()
def model_steps(rows: list[int], repeats: int, overrides: list[str]) -> None:
    from transformers import DynamicCache

    from uhlm_ray.config import load_config
    from uhlm_ray.models.loading import cpu_has_bf16_units, load_pair, resolve_dtype

    # the kernels as they are: batch invariance would run a one-row step as two rows (models.batch_invariance)
    cfg = load_config(overrides=["model.dtype=float32", "model.batch_invariant=false", *overrides])
    llm = load_pair(cfg.model).llm.model

    def step_ms(batch: int) -> float:
        prompt = torch.randint(0, 1000, (batch, 100))
        cache = DynamicCache(config=llm.config)
        llm(input_ids=prompt, cache=cache, use_cache=True)

        def one_step():
            llm(input_ids=prompt[:, -1:], cache=cache, use_cache=True)
            cache.crop(-1)  # the same 100-token cache every step

        return 1e3 * median_seconds(one_step, repeats=repeats)

    # the prefill of a 45-token prompt (an Alpaca prompt's size) and one step per batch size, per kernel and dtype
    prefill = torch.randint(0, 1000, (1, 45))
    kernels = {"torch": ("torch", torch.float32), "onednn": ("onednn", torch.float32),
               "bf16": ("torch", torch.bfloat16)}
    ms: dict[str, dict[int | str, float]] = {}
    for name, (backend, dtype) in kernels.items():
        install_linear_backend(llm, backend=backend)
        llm.to(dtype)
        ms[name] = {b: step_ms(b) for b in rows}
        ms[name]["prefill"] = 1e3 * median_seconds(lambda: llm(input_ids=prefill), repeats=repeats)
    print(f"\n(bf16 units on this CPU: {cpu_has_bf16_units()}; model.dtype=auto picks "
          f"{resolve_dtype('auto', device='cpu')})")
    print("\n| LLM pass (100-token cache) | batch | torch fp32 ms | oneDNN fp32 ms | bf16 ms | torch / oneDNN "
          "| oneDNN / bf16 | oneDNN tok/s x batch 1 | bf16 tok/s x batch 1 |"
          "\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for b in [*rows, "prefill"]:
        # tokens per second of this batch size over the smallest one's, per kernel
        gains = [""] * 2 if b == "prefill" else [f"{b * ms[k][rows[0]] / ms[k][b] / rows[0]:.1f}x"
                                                 for k in ("onednn", "bf16")]
        label = "45-token prefill" if b == "prefill" else "one step"
        print(f"| {cfg.model.pair} LLM, {label} | {'1' if b == 'prefill' else b} | {ms['torch'][b]:.0f} | "
              f"{ms['onednn'][b]:.0f} | {ms['bf16'][b]:.0f} | {ms['torch'][b] / ms['onednn'][b]:.2f}x | "
              f"{ms['onednn'][b] / ms['bf16'][b]:.2f}x | {gains[0]} | {gains[1]} |", flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="1,4,8,16,32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", action="store_true", help="also time one step of the configured LLM")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args(argv)
    rows = [int(r) for r in args.rows.split(",")]
    print(f"[bench] torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, float32")
    products(rows, args.repeats)
    if args.model:
        model_steps(rows, args.repeats, args.overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
