"""Model loading (hub id, folder, GGUF, embedded part packages) and the KV-cache step API."""

from uhlm_ray.models.loading import LoadedModel, ModelPair, check_same_vocabulary, load_model, load_pair
from uhlm_ray.models.session import CausalSession, full_recompute_logits, response_logits

__all__ = [
    "CausalSession",
    "LoadedModel",
    "ModelPair",
    "check_same_vocabulary",
    "full_recompute_logits",
    "load_model",
    "load_pair",
    "response_logits",
]
