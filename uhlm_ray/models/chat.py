"""A prompt as the models' chat template renders it: the token ids both the SLM and the LLM start from."""

from __future__ import annotations


def chat_prompt_ids(*, tokenizer, prompt: str) -> list[int]:
    """The prompt as the user turn of the models' chat template, ready for generation."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        return list(ids["input_ids"] if isinstance(ids, dict) else ids)
    return tokenizer(prompt)["input_ids"]
