"""Loaders for the built-in prompts and the public evaluation files in ../shared/data."""

import pytest

from tests.conftest import SHARED_DATA
from uhlm_ray.config import DataConfig
from uhlm_ray.experiments.datasets import load_examples, read_all
from uhlm_ray.validation import ConfigError

needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"public data folder {SHARED_DATA} not present")


def test_builtin_set_has_prompts_and_references():
    examples = read_all(name="builtin", path=None)
    assert len(examples) >= 20
    assert all(e.prompt and e.reference for e in examples)


@needs_data
# two Alpaca rows have an empty output and cannot be scored
@pytest.mark.parametrize(("name", "rows"), [("alpaca", 4998), ("creak", 6915), ("strategyqa", 2061), ("qed", None)])
def test_public_sets_load_with_references(name, rows):
    examples = read_all(name=name, path=SHARED_DATA)
    if rows is not None:
        assert len(examples) == rows
    assert len(examples) > 500 and all(e.prompt and e.reference for e in examples)
    if name != "alpaca":
        assert all(" So the answer is " in e.reference for e in examples[:50])
        assert all(e.prompt.startswith("Answer the following question.") for e in examples[:50])
        assert all("\\n" not in e.prompt for e in examples[:50])  # FLAN's escaped newlines are restored


@needs_data
def test_paper_sampling_is_fixed_by_seed():
    first = load_examples(DataConfig(name="alpaca", path=str(SHARED_DATA), sample_seed=0))  # the paper's 100
    again = load_examples(DataConfig(name="alpaca", path=str(SHARED_DATA), n_prompts=100, sample_seed=0))
    other = load_examples(DataConfig(name="alpaca", path=str(SHARED_DATA), n_prompts=100, sample_seed=1))
    assert len(first) == 100 and len({e.id for e in first}) == 100
    assert [e.id for e in first] == [e.id for e in again]
    assert [e.id for e in first] != [e.id for e in other]


def test_missing_folder_and_unknown_name_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="data.path must name the folder holding alpaca_5000.json"):
        read_all(name="alpaca", path=None)
    with pytest.raises(ConfigError, match=r"data.path='.*' has no qed-dev.jsonlines"):
        read_all(name="qed", path=tmp_path)
    with pytest.raises(ConfigError, match="data.name='mmlu' is not one of"):
        read_all(name="mmlu", path=tmp_path)
