"""Load an SLM/LLM pair that shares one vocabulary: from a Hugging Face id, a local folder or a GGUF file."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from uhlm_ray.config import ModelConfig
from uhlm_ray.models.batch_invariance import batch_invariant_of, install_batch_invariance, resolve_batch_invariant
from uhlm_ray.models.embedded import cache_root, convert_gguf, ensure_embedded
from uhlm_ray.models.linear_backend import install_linear_backend, resolve_linear_backend
from uhlm_ray.models.presets import resolve_pair
from uhlm_ray.models.trimmed_head import TrimmedHead, trim_output_head
from uhlm_ray.validation import ConfigError

EMBEDDED_PREFIX = "embedded:"


@dataclass
class LoadedModel:
    source: str
    model: torch.nn.Module
    tokenizer: object  # a transformers PreTrainedTokenizerBase
    vocab_size: int  # rows of the output layer: the length of every distribution the model produces
    eos_token_ids: frozenset[int]
    linear_backend: str = "torch"  # who runs its float32 CPU products (uhlm_ray.models.linear_backend)

    @property
    def batch_invariant(self) -> bool:
        """Its passes give a sequence the same bits alone or batched now (models.batch_invariance; read off the
        model, since `single_stream` turns it off for a while)."""
        return batch_invariant_of(self.model)

    @property
    def draft_support(self) -> int:
        """How many ids its distributions can give probability: the kept ids under a trimmed head
        (`model.slm_head_vocab`), |V| otherwise. A dense upload carries one probability per id of it."""
        head = self.model.get_output_embeddings()
        return int(head.kept.numel()) if isinstance(head, TrimmedHead) else self.vocab_size


@dataclass
class ModelPair:
    slm: LoadedModel
    llm: LoadedModel

    @property
    def vocab_size(self) -> int:
        return self.slm.vocab_size

    @property
    def tokenizer(self):
        return self.slm.tokenizer

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return self.slm.eos_token_ids | self.llm.eos_token_ids


def resolve_dtype(name: str, *, device: str) -> torch.dtype:
    """"auto" is bfloat16 where the device supports it and float32 otherwise; arithmetic on outputs is float32."""
    if name != "auto":
        return getattr(torch, name)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # Trials decode in lockstep batches, so most passes are multi-token GEMMs (prefill, batched rounds), which bf16
    # runs slowly on CPUs without bf16 units. Measured on a 2-core AVX-512 CPU without them (alpaca, 8 prompts x 32
    # tokens, the embedded pair): prefill 3.1x faster in fp32, one-token LLM steps 344 -> 293 ms, and batch 8 makes
    # 5.7 tok/s of trial time for the LLM alone against 3.9 in bf16. On a 2-core EPYC with AVX512-BF16 units bf16 is
    # the faster one (bench/linear_backend.py --model: an LLM step 243 against 284 ms through oneDNN at batch 1, 390
    # against 602 at batch 16, a 45-token prefill 559 against 984; a batch-16 trial 1.8x, docs/reproduction.md).
    # oneDNN uses the units whatever level ATen's own kernels dispatch at (torch reports "AVX512" on that CPU), so
    # ask for the units themselves.
    return torch.bfloat16 if cpu_has_bf16_units() else torch.float32


CPUINFO = Path("/proc/cpuinfo")  # where Linux lists the CPU's flags


def cpu_has_bf16_units() -> bool:
    """Whether this CPU computes in bf16 (AVX512-BF16 or AMX tiles): from the kernel's CPU flags where the OS lists
    them (Linux), else from the level of torch's own kernels, which names AVX512_BF16 or AMX only on some builds
    (this EPYC has avx512_bf16, yet torch 2.13 reports "AVX512")."""
    try:
        flags = {f for line in CPUINFO.read_text().splitlines() if line.startswith("flags")
                 for f in line.split(":", 1)[1].split()}
    except OSError:
        flags = None
    if flags:
        return "avx512_bf16" in flags or "amx_bf16" in flags
    capability = torch.backends.cpu.get_cpu_capability()
    return capability == "AVX512_BF16" or "AMX" in capability


def _gguf_cache_folder(gguf: Path) -> Path:
    """A GGUF file given by path is dequantized once into the cache, keyed by its content hash."""
    digest = hashlib.sha256()
    with gguf.open("rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    out_dir = cache_root() / "models" / f"{gguf.stem}-{digest.hexdigest()[:12]}-bf16"
    if not out_dir.is_dir():
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        convert_gguf(gguf_path=gguf, out_dir=out_dir)
    return out_dir


def resolve_source(source: str) -> str:
    """A loadable Hugging Face id or folder for `source` (embedded name, folder, .gguf path or hub id)."""
    if source.startswith(EMBEDDED_PREFIX):
        return str(ensure_embedded(source[len(EMBEDDED_PREFIX) :]))
    path = Path(source).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ConfigError(f"model source {source!r}: no such GGUF file")
        return str(_gguf_cache_folder(path))
    return str(path) if path.is_dir() else source


def hub_reference(where: str) -> tuple[str, str | None]:
    """A hub id pinned as `org/name@<commit>` -> (id, revision); anything else (a folder, an unpinned id) -> (where,
    None). Pinned ids download (or find in the hub cache) exactly that commit; a gated repository takes the token
    from $HF_TOKEN, which huggingface_hub reads itself."""
    name, at, revision = where.rpartition("@")
    if at and name.count("/") == 1 and revision and not Path(where).expanduser().exists():
        return name, revision
    return where, None


def load_model(source: str, *, dtype: torch.dtype, device: str = "cpu", linear_backend: str = "auto",
               batch_invariant: bool | None = None) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-tensor bar on every load would drown the job's own progress

    where, revision = hub_reference(resolve_source(source))
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, revision=revision)
    except OSError as err:
        raise ConfigError(
            f"model source {source!r} is neither an embedded model, a local folder, a .gguf file, nor a Hugging Face "
            f"id available offline ({err.__class__.__name__}: {str(err).splitlines()[0]})"
        ) from err
    model.to(device).eval()
    backend = resolve_linear_backend(linear_backend, dtype=dtype, device=device)
    install_linear_backend(model, backend=backend)
    if resolve_batch_invariant(batch_invariant, dtype=dtype, device=device, linear_backend=backend):
        try:
            install_batch_invariance(model, on=True)
        except ConfigError:
            if batch_invariant:  # asked for: say why not; auto: decode without it
                raise
    eos = model.generation_config.eos_token_id if model.generation_config is not None else None
    eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        eos_ids.add(tokenizer.eos_token_id)
    vocab_size = model.get_output_embeddings().weight.shape[0]
    return LoadedModel(
        source=source, model=model, tokenizer=tokenizer, vocab_size=vocab_size, eos_token_ids=frozenset(eos_ids),
        linear_backend=backend,
    )


def vocabulary_difference(*, slm_vocab: dict[str, int], llm_vocab: dict[str, int]) -> str | None:
    """The first difference between two token -> id maps (by id), or None when they are the same."""
    for token, index in sorted(slm_vocab.items(), key=lambda kv: kv[1]):
        if llm_vocab.get(token) != index:
            return (f"token {token!r} has id {index} in the SLM but {llm_vocab.get(token)} in the LLM "
                    "(first difference by id)")
    extra = sorted(set(llm_vocab) - set(slm_vocab), key=llm_vocab.get)
    return f"token {extra[0]!r} (id {llm_vocab[extra[0]]}) is only in the LLM" if extra else None


def check_same_vocabulary(*, slm: LoadedModel, llm: LoadedModel) -> None:
    """The pair must produce distributions over the same tokens, in the same order; name the first difference."""
    if slm.vocab_size != llm.vocab_size:
        raise ConfigError(
            f"vocabulary size differs: SLM {slm.source!r} has {slm.vocab_size} output rows, "
            f"LLM {llm.source!r} has {llm.vocab_size}"
        )
    difference = vocabulary_difference(slm_vocab=slm.tokenizer.get_vocab(), llm_vocab=llm.tokenizer.get_vocab())
    if difference:
        raise ConfigError(f"vocabularies differ: {difference}")


def load_slm(cfg: ModelConfig, *, device: str | None = None) -> LoadedModel:
    """The pair's SLM on `device` (None: `model.device`), its head trimmed to `model.slm_head_vocab` where set."""
    on = cfg.device if device is None else device
    slm = load_model(resolve_pair(cfg)[0], dtype=resolve_dtype(cfg.dtype, device=on), device=on,
                     linear_backend=cfg.linear_backend, batch_invariant=cfg.batch_invariant)
    if cfg.slm_head_vocab is not None:  # the trim keeps |V| rows of output, so vocab_size stays the whole head's
        trim_output_head(slm, keep=cfg.slm_head_vocab)
    return slm


def load_pair(cfg: ModelConfig) -> ModelPair:
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    pair = ModelPair(
        slm=load_slm(cfg),
        llm=load_model(resolve_pair(cfg)[1], dtype=resolve_dtype(cfg.dtype, device=cfg.device), device=cfg.device,
                       linear_backend=cfg.linear_backend, batch_invariant=cfg.batch_invariant),
    )
    check_same_vocabulary(slm=pair.slm, llm=pair.llm)
    return pair
