"""Random-weight copies of a pair's architectures, for timing where the real weights cannot travel (a lent GPU
machine takes 64 MiB): the pair's own configs and tokenizers, weights drawn by the models' own initialisation.
A random-weight model times the same as the real one per pass; its distributions are near-uniform, so what depends
on the text (acceptance, skips, how many tokens top-p keeps) is not the real pair's, and no quality figure is.

Two steps, so that only a few MB travel:

    .venv/bin/python bench/random_pair.py configs --out .gpu/pair            # here: configs and tokenizers (22 MB)
    python3 bench/random_pair.py weights --out .gpu/pair --device cuda      # there: bf16 weights beside them

then any bench takes `model.pair=custom model.slm=.gpu/pair/slm model.llm=.gpu/pair/llm`. The `configs` step
reads the configured pair (`model.*` overrides after the options; the embedded Qwen2.5-Coder 0.5B/1.5B by default).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

SIDES = ("slm", "llm")
KEPT = ("*.json", "*.jinja", "*.model", "*.txt")  # configs, tokenizers, chat templates: never weights


def copy_configs(*, out: Path, overrides: list[str]) -> None:
    from uhlm_ray.config import load_config
    from uhlm_ray.models.loading import resolve_source
    from uhlm_ray.models.presets import resolve_pair

    cfg = load_config(overrides=overrides)
    for side, source in zip(SIDES, resolve_pair(cfg.model), strict=True):
        folder = Path(resolve_source(source))
        if not folder.is_dir():
            raise SystemExit(f"{side} source {source!r} is not a local folder (a hub id must be downloaded first)")
        (out / side).mkdir(parents=True, exist_ok=True)
        copied = [shutil.copy2(f, out / side / f.name) for pattern in KEPT for f in folder.glob(pattern)
                  if f.name != "uhlm_ray_converted.txt"]
        print(f"[random_pair] {side}: {len(copied)} files from {folder}", flush=True)


def make_weights(*, out: Path, device: str, seed: int) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    for side in SIDES:
        start = time.perf_counter()
        config = AutoConfig.from_pretrained(out / side)
        torch.manual_seed(seed)
        with torch.device(device):  # drawn where it runs: seconds on a GPU
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(out / side)
        params = sum(p.numel() for p in model.parameters())
        print(f"[random_pair] {side}: {params / 1e9:.2f}B parameters, {time.perf_counter() - start:.1f} s", flush=True)
        del model


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["configs", "weights"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cpu", help="weights: where to draw them (cpu, cuda)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="configs: model.* overrides naming the pair")
    args = parser.parse_args(argv)
    if args.step == "configs":
        copy_configs(out=args.out, overrides=args.overrides)
    else:
        make_weights(out=args.out, device=args.device, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
