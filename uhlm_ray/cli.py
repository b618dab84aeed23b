"""The command line every job shares: `[--config file.yaml] [dotted.override=value ...]`, then the prompts."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from uhlm_ray.config import EvaluateConfig, config_from_argv
from uhlm_ray.experiments.datasets import Example, load_examples
from uhlm_ray.validation import ConfigError


@contextmanager
def refusals() -> Iterator[None]:
    """A ConfigError inside ends the job with one line on stderr and exit status 2."""
    try:
        yield
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from err


def job_inputs(argv: list[str], *, description: str, defaults: list[str] = ()) -> tuple[EvaluateConfig, list[Example]]:
    """The validated config, its prompt set and a checked model pair (files only), before any weights load; a bad
    setting exits with status 2 and a message naming the field. `defaults` are the job's own overrides, applied
    before the command line's."""
    from uhlm_ray.models.preflight import check_model_sources

    with refusals():
        cfg = config_from_argv(argv, description=description, defaults=list(defaults))
        examples = load_examples(cfg.data)
        check_model_sources(cfg.model)
        return cfg, examples
