"""Checks on the model pair before any weights load: both sources exist and their tokenizers agree.

Only the small files are read (config.json and the tokenizer's files), so a wrong path or an SLM whose vocabulary
differs from the LLM's is refused in about a second instead of after both models have loaded. The embedded pair is
assembled here if it is not yet (with progress on the console), so that a job's workers find it ready.
"""

from __future__ import annotations

import json
from pathlib import Path

from uhlm_ray.config import ModelConfig
from uhlm_ray.models.loading import hub_reference, resolve_source, vocabulary_difference
from uhlm_ray.models.presets import resolve_pair
from uhlm_ray.models.trimmed_head import check_head_vocab
from uhlm_ray.validation import ConfigError


def _field(cfg: ModelConfig, side: str) -> str:
    return f"model.{side}" if getattr(cfg, side) else "model.pair"


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or Path(source).expanduser().exists()


def _output_rows(folder: Path) -> int | None:
    """The vocabulary size config.json declares (the LM head's rows), or None when it does not say."""
    config = json.loads((folder / "config.json").read_text())
    text = config.get("text_config", config)
    return text.get("vocab_size")


def _tokenizer_vocab(where: str, *, field: str, source: str) -> dict[str, int]:
    from transformers import AutoTokenizer

    try:
        name, revision = hub_reference(where)
        return AutoTokenizer.from_pretrained(name, revision=revision).get_vocab()
    except (OSError, ValueError) as err:
        raise ConfigError(f"{field}={source!r}: no tokenizer could be read from it "
                          f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from err


def check_model_sources(cfg: ModelConfig) -> tuple[str, str]:
    """The (slm, llm) folders or ids, checked: existing folders with a config.json and tokenizers that agree."""
    slm, llm = resolve_pair(cfg)
    located = {}
    for side, source in (("slm", slm), ("llm", llm)):
        field = _field(cfg, side)
        if source.endswith(".gguf") and not Path(source).expanduser().is_file():
            raise ConfigError(f"{field}={source!r}: no such GGUF file")
        if _looks_like_path(source) and not source.endswith(".gguf"):
            folder = Path(source).expanduser()
            if not folder.is_dir():
                raise ConfigError(f"{field}={source!r}: no such folder (a Hugging Face model folder, a .gguf file, "
                                  "an embedded model or a hub id available offline)")
            if not (folder / "config.json").is_file():
                raise ConfigError(f"{field}={source!r}: the folder has no config.json (not a Hugging Face model "
                                  "folder)")
        located[side] = resolve_source(source)
    vocabs = {side: _tokenizer_vocab(where, field=_field(cfg, side), source=source)
              for side, where, source in (("slm", located["slm"], slm), ("llm", located["llm"], llm))}
    difference = vocabulary_difference(slm_vocab=vocabs["slm"], llm_vocab=vocabs["llm"])
    if difference:
        raise ConfigError(f"model.slm={slm!r} and model.llm={llm!r} do not share a vocabulary: {difference}")
    rows = {side: _output_rows(Path(where)) for side, where in located.items() if Path(where, "config.json").is_file()}
    if len(rows) == 2 and None not in rows.values() and rows["slm"] != rows["llm"]:
        raise ConfigError(f"model.slm={slm!r} has {rows['slm']} output rows but model.llm={llm!r} has "
                          f"{rows['llm']} (config.json vocab_size): the pair must share its vocabulary")
    if cfg.slm_head_vocab is not None and rows.get("slm") is not None:
        check_head_vocab(keep=cfg.slm_head_vocab, rows=rows["slm"])
    return slm, llm


if __name__ == "__main__":  # `python -m uhlm_ray.models.preflight`: a node builds the default pair's cache once
    from uhlm_ray.config import ModelConfig

    print("model pair ready:", *check_model_sources(ModelConfig()))
