"""Evaluation prompts with reference responses: the built-in set, Alpaca, and FLAN's QED, CREAK and StrategyQA.

The public files are read from a folder the user names (`data.path`; their provenance is in ../shared/data/README.md);
nothing is copied into the project. Like the paper, we draw `n_prompts` examples at random with a fixed seed.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from uhlm_ray.config import DATASET_NAMES, DataConfig
from uhlm_ray.validation import ConfigError, check_choice, check_range

# FLAN's chain-of-thought targets read "<reasoning> So the answer is <answer>."; instruction-tuned models answer with
# one word unless asked to reason, which would make the similarity metric meaningless.
COT_INSTRUCTION = (
    "Answer the following question. Reason step by step in two or three sentences, "
    'then end with "So the answer is <answer>."\n\n'
)

FILES = {
    "alpaca": "alpaca_5000.json",
    "qed": "qed-dev.jsonlines",
    "creak": "flan_cot_creak_train.tsv",
    "strategyqa": "flan_cot_strategyqa_train.tsv",
}


FORMATS = {
    "alpaca": "a JSON list of {instruction, input, output}",
    "qed": "JSON lines with example_id, title_text, paragraph_text, question_text and annotation",
    "creak": "tab-separated rows: question, answer, reasoning",
    "strategyqa": "tab-separated rows: question, answer, reasoning",
}


@dataclass(frozen=True)
class Example:
    id: str
    prompt: str  # the user turn, before the chat template
    reference: str  # the ground-truth response the cosine similarity is measured against


def _cot_reference(*, reasoning: str, answer: str) -> str:
    return f"{reasoning.strip()} So the answer is {answer.strip()}."


def _read_builtin() -> list[Example]:
    rows = json.loads(resources.files("uhlm_ray.data").joinpath("builtin_prompts.json").read_text())
    return [Example(id=f"builtin-{i}", prompt=r["prompt"], reference=r["reference"]) for i, r in enumerate(rows)]


def _read_alpaca(path: Path) -> list[Example]:
    rows = json.loads(path.read_text())
    examples = []
    for i, r in enumerate(rows):
        prompt = r["instruction"] if not r.get("input") else f"{r['instruction']}\n\n{r['input']}"
        examples.append(Example(id=f"alpaca-{i}", prompt=prompt, reference=r["output"]))
    return examples


def _read_flan_cot_tsv(path: Path, *, name: str) -> list[Example]:
    examples = []
    with path.open(newline="") as f:
        for i, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)):
            if len(row) != 3:
                raise ValueError(f"line {i + 1} has {len(row)} column(s), expected 3")
            question, answer, reasoning = row
            question = question.replace("\\n", "\n")  # FLAN's TSVs escape newlines
            examples.append(
                Example(
                    id=f"{name}-{i}",
                    prompt=COT_INSTRUCTION + question,
                    reference=_cot_reference(reasoning=reasoning, answer=answer),
                )
            )
    return examples


def _read_qed(path: Path) -> list[Example]:
    """QED dev: the passage and question as the prompt; the selected sentence and answer span as the reference."""
    examples = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            r = json.loads(line)
        except ValueError as err:
            raise ValueError(f"line {number}: {err}") from err
        annotation = r["annotation"]
        if not annotation.get("answer"):
            continue  # no answer span annotated: nothing to compare against
        question = f"{r['title_text']}: {r['paragraph_text']}\n\nQuestion: {r['question_text']}?"
        examples.append(
            Example(
                id=f"qed-{r['example_id']}",
                prompt=COT_INSTRUCTION + question,
                reference=_cot_reference(
                    reasoning=annotation["selected_sentence"]["string"],
                    answer=annotation["answer"][0]["paragraph_reference"]["string"],
                ),
            )
        )
    return examples


def read_all(*, name: str, path: str | Path | None) -> list[Example]:
    """Every scorable example of a data set, in file order (rows with an empty reference cannot be scored)."""
    return [e for e in _read_rows(name=name, path=path) if e.reference.strip()]


def _read_rows(*, name: str, path: str | Path | None) -> list[Example]:
    check_choice(name, field="data.name", allowed=DATASET_NAMES)
    if name == "builtin":
        return _read_builtin()
    if path is None:
        raise ConfigError(f"data.path must name the folder holding {FILES[name]} for data.name={name!r}")
    if not Path(path).is_dir():
        raise ConfigError(f"data.path={str(path)!r}: no such folder (it must hold {FILES[name]} for "
                          f"data.name={name!r}; see ../shared/data/README.md)")
    file = Path(path) / FILES[name]
    if not file.is_file():
        raise ConfigError(f"data.path={str(path)!r} has no {FILES[name]} (needed for data.name={name!r})")
    try:
        if name == "alpaca":
            return _read_alpaca(file)
        if name == "qed":
            return _read_qed(file)
        return _read_flan_cot_tsv(file, name=name)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, UnicodeDecodeError) as err:
        # truncated or foreign files: name the file and the format it should have, not a parser's traceback
        raise ConfigError(f"data file {str(file)!r} is not a valid {name} file ({FORMATS[name]}): "
                          f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from err


def default_prompt_count(name: str) -> int:
    """5 built-in prompts keep the default run short on a laptop; the public sets use the paper's 100."""
    return 5 if name == "builtin" else 100


def load_examples(cfg: DataConfig) -> list[Example]:
    """`cfg.n_prompts` examples drawn without replacement by `cfg.sample_seed` (all of them if fewer exist)."""
    requested = cfg.n_prompts if cfg.n_prompts is not None else default_prompt_count(cfg.name)
    check_range(requested, field="data.n_prompts", low=1)
    examples = read_all(name=cfg.name, path=cfg.path)
    n = min(requested, len(examples))
    picked = np.random.default_rng(cfg.sample_seed).choice(len(examples), size=n, replace=False)
    return [examples[i] for i in sorted(picked)]
