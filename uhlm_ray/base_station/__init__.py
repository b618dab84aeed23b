"""The base station: the LLM verifier with its per-device sessions and batched verification passes.
May import sampling/, models/, protocol, validation; never device/, link/ or the loop."""
