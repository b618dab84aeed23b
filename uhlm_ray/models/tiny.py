"""A tiny random-weight Qwen2 pair saved as real Hugging Face folders: for tests of mechanics and load benches only
(never evidence that a feature works on a real model).

The tokenizer is a word-level vocabulary (unknown, end of sequence, then one id per word). Saved as is, a Qwen2
config makes `AutoTokenizer` rebuild it as a byte-level Qwen2 tokenizer with an extra `<|endoftext|>` id outside
the model's outputs, which maps most words to one id; the folder therefore names its tokenizer class explicitly,
and `save_tiny_model` reloads it and checks that every word round-trips to its own id.
"""

from __future__ import annotations

import json
from pathlib import Path

WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "is", "big", "small", "red", "blue", "and", "or", "not", "yes"]


def save_tiny_model(folder: Path | str, *, words: list[str], layers: int, hidden: int, seed: int) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    folder = Path(folder)
    vocab = {"<unk>": 0, "<eos>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>")
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, eos_token_id=1,
        tie_word_embeddings=False,
    )
    model = Qwen2ForCausalLM(config)
    # random init at std 0.02 gives near-uniform distributions; sharper logits make drafts disagree more usefully
    with torch.no_grad():
        model.lm_head.weight.mul_(25.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    settings = folder / "tokenizer_config.json"
    saved = json.loads(settings.read_text())
    saved["auto_map"] = {"AutoTokenizer": [None, "PreTrainedTokenizerFast"]}  # this class, not the model type's
    settings.write_text(json.dumps(saved, indent=2))
    reloaded = AutoTokenizer.from_pretrained(folder)
    if len(reloaded) != len(vocab) or reloaded(" ".join(words))["input_ids"] != list(range(2, len(vocab))):
        raise RuntimeError(f"the tiny tokenizer in {folder} does not reload as built: {len(reloaded)} tokens, "
                           f"{type(reloaded).__name__}")
    return folder
