"""The command line every job shares: `[--config file.yaml] [dotted.override=value ...]`, then the prompts."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from uhlm_ray.config import EvaluateConfig, config_from_argv
from uhlm_ray.experiments.datasets import Example, load_examples
from uhlm_ray.experiments.locations import output_root
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
        check_writable_folder(str(output_root(cfg.output_dir)), field="output_dir")
        if cfg.runtime.scratch_dir is not None:
            check_writable_folder(cfg.runtime.scratch_dir, field="runtime.scratch_dir")
        examples = load_examples(cfg.data)
        check_model_sources(cfg.model)
        return cfg, examples


def check_writable_folder(path: str, *, field: str) -> None:
    """A folder results will be written to: created now (with its parents) and probed, so that a job whose models
    take minutes to load cannot fail only when it writes its first result."""
    folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".uhlm_ray-probe-"):
            pass
    except OSError as err:
        raise ConfigError(f"{field}={path!r} cannot be created or written: {err.strerror or err} "
                          "(give a folder this user may write)") from err
