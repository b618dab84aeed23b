"""The command line every job shares: `[--config file.yaml] [dotted.override=value ...]`, then the prompts."""

from __future__ import annotations

import sys

from uhlm_ray.config import EvaluateConfig, config_from_argv
from uhlm_ray.datasets import Example, load_examples
from uhlm_ray.validation import ConfigError


def job_inputs(argv: list[str], *, description: str, defaults: list[str] = ()) -> tuple[EvaluateConfig, list[Example]]:
    """The validated config and its prompt set; a bad setting exits with status 2 and a message naming the field.
    `defaults` are the job's own overrides, applied before the command line's."""
    try:
        cfg = config_from_argv(argv, description=description, defaults=list(defaults))
        return cfg, load_examples(cfg.data)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from err
