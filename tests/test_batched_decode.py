"""Batched evaluation: prompts decoded in lockstep give the tokens and records of batch-1 decoding (every draw is
keyed), are stored as they finish and resume; the modelled clock comes from solo passes, never from the batch.

The tiny random-weight pair runs in float64 here, so that a padded batch's rounding cannot flip a sampled token.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from uhlm_ray.base_station.verifier import Verifier
from uhlm_ray.config import load_config
from uhlm_ray.decode import Slots, decode_batch, device_job, make_policy
from uhlm_ray.experiments import calibration as calibration_module
from uhlm_ray.experiments.calibration import calibrate
from uhlm_ray.experiments.datasets import Example
from uhlm_ray.experiments.evaluate import (
    ResultStore,
    SharedTime,
    evaluate_methods,
    run_clock,
    run_method,
    summarize_methods,
)
from uhlm_ray.models.chat import chat_prompt_ids
from uhlm_ray.protocol import SessionError
from uhlm_ray.records import drawn_outcome, record_outcome
from uhlm_ray.validation import ConfigError

EXAMPLES = [Example(id=f"e{i}", prompt=p, reference="ref") for i, p in enumerate(
    ["the cat", "a dog runs", "one two three", "sun and moon", "red", "the river runs far"])]


@pytest.fixture(scope="module")
def pair64(tiny_pair64):
    return tiny_pair64


def _cfg(*overrides: str):
    return load_config(overrides=["decode.max_new_tokens=12", "policy.send_prob=0.5", "block.max_drafts=3",
                                  "decode.evaluation_methods=[u_hlm,rand_hlm,cu_hlm,block_hlm]", *overrides])


@pytest.mark.parametrize("method", ["llm", "slm", "hlm", "rand_hlm", "u_hlm", "cu_hlm", "block_hlm"])
def test_lockstep_batches_decode_what_batch_one_decodes(pair64, method):
    solo = run_method(pair=pair64, examples=EXAMPLES, method=method, cfg=_cfg("runtime.batch_size=1"),
                      encoder=None, store=None)
    batched = run_method(pair=pair64, examples=EXAMPLES, method=method, cfg=_cfg("runtime.batch_size=4"),
                         encoder=None, store=None)
    assert [r.batch_size for r in solo] == [1] * 6
    assert [r.batch_size for r in batched] == [4] * 6  # 4 at a time: prompts 4 and 5 take finished prompts' places
    assert sum(len(r.tokens) for r in solo) > 6 * 3  # the prompts really generated
    assert drawn_outcome(batched) == drawn_outcome(solo)


def test_slots_give_a_finished_jobs_place_to_the_next_one():
    opened = []
    slots = Slots(count=6, width=4, open_job=opened.append)
    assert slots.active == [0, 1, 2, 3] and opened == [0, 1, 2, 3]
    assert slots.retire(lambda i: i == 1) == [0, 2, 3, 4] and opened == [0, 1, 2, 3, 4]
    assert slots.retire(lambda i: i in (0, 2)) == [3, 4, 5]
    assert slots.retire(lambda i: True) == [] and opened == list(range(6))
    assert Slots(count=3, width=None, open_job=lambda i: None).active == [0, 1, 2]
    with pytest.raises(ConfigError, match=r"width=0 is outside \[1, inf\]"):
        Slots(count=3, width=0, open_job=lambda i: None)


@pytest.mark.parametrize("method", ["hlm", "block_hlm"])
def test_a_lockstep_holds_at_most_its_width_and_decodes_what_all_at_once_decodes(pair64, method):
    """Through a verifier that refuses a fifth session: width 4 decodes all six prompts (the first to finish make
    room), and the tokens and records are those of all six at once; all six at once are refused (power check)."""
    cfg = _cfg()
    policy = make_policy(method=method, cfg=cfg)

    def jobs():
        return [device_job(prompt_ids=chat_prompt_ids(tokenizer=pair64.tokenizer, prompt=e.prompt), prompt_index=i,
                           method=method, cfg=cfg, policy=policy) for i, e in enumerate(EXAMPLES)]

    finished = []
    narrow = decode_batch(pair=pair64, jobs=jobs(), cfg=cfg, verifier=Verifier(model=pair64.llm, max_sessions=4),
                          width=4, on_done=lambda i, _: finished.append(i))
    wide = decode_batch(pair=pair64, jobs=jobs(), cfg=cfg, verifier=Verifier(model=pair64.llm, max_sessions=6))
    assert [(o.tokens, o.stop_reason, record_outcome(o.records)) for o in narrow] == \
        [(o.tokens, o.stop_reason, record_outcome(o.records)) for o in wide]
    assert len({len(o.tokens) for o in wide}) > 1  # prompts end at different rounds, so places do free up
    assert sorted(finished) == list(range(6))
    with pytest.raises(SessionError, match="max_sessions=4"):
        decode_batch(pair=pair64, jobs=jobs(), cfg=cfg, verifier=Verifier(model=pair64.llm, max_sessions=4))


def test_batched_results_are_stored_as_they_finish_and_resume(pair64, tmp_path):
    cfg = _cfg("runtime.batch_size=4")
    store = ResultStore(tmp_path / "store")
    heard = []
    first = run_method(pair=pair64, examples=EXAMPLES[:3], method="u_hlm", cfg=cfg, encoder=None, store=store,
                       on_prompt=lambda r: heard.append((r.prompt_index, len(store.load("u_hlm")))))
    # each prompt was in the store by the time the caller heard of it
    assert [n for _, n in heard] == [1, 2, 3]
    decoded = []
    resumed = run_method(pair=pair64, examples=EXAMPLES, method="u_hlm", cfg=cfg, encoder=None, store=store,
                         on_prompt=lambda r: decoded.append(r.prompt_index))
    assert sorted(decoded) == [0, 1, 2, 3, 4, 5]  # every prompt reported, the first three from the store
    lines = (tmp_path / "store" / "u_hlm.jsonl").read_text().splitlines()
    assert sorted(int(line.split('"prompt_index": ')[1].split(",")[0]) for line in lines) == [0, 1, 2, 3, 4, 5]
    fresh = run_method(pair=pair64, examples=EXAMPLES, method="u_hlm", cfg=cfg, encoder=None, store=None)
    assert drawn_outcome(resumed) == drawn_outcome(first + fresh[3:]) == drawn_outcome(fresh)


def test_decode_shares_add_up_to_the_experiment_time(pair64):
    results = run_method(pair=pair64, examples=EXAMPLES, method="hlm", cfg=_cfg("runtime.batch_size=6"),
                         encoder=None, store=None)
    assert all(r.decode_s >= 0 for r in results) and sum(r.decode_s for r in results) > 0
    # processor sharing: a prompt that decoded for more rounds was charged at least as much as a shorter one, so the
    # bootstrap over prompts does not see the batch's late finishers as free
    by_length = sorted(results, key=lambda r: len(r.tokens))
    assert len({len(r.tokens) for r in results}) > 1, "the test needs prompts that stop at different lengths"
    assert all(a.decode_s <= b.decode_s for a, b in zip(by_length, by_length[1:], strict=False)
               if len(a.tokens) < len(b.tokens))
    longest = [r.decode_s for r in results if len(r.tokens) == len(by_length[-1].tokens)]
    assert len(longest) > 1 and min(longest) > 0.5 * max(longest)  # prompts that finished together cost alike
    summary = summarize_methods(results={"hlm": results}, cfg=_cfg("runtime.batch_size=6", "clock.tau_slm_ms=20",
                                                                   "clock.tau_llm_ms=100"))["hlm"]
    tokens = sum(len(r.tokens) for r in results)
    assert summary["throughput_experiment"] == pytest.approx(tokens / sum(r.decode_s for r in results))
    assert math.isnan(summary["throughput_wall"])  # a lockstep round is not one stream's time
    assert summary["max_batch_size"] == 6


def test_shared_time_splits_each_interval_among_the_prompts_decoding_then():
    """Six prompts four at a time, finishing one a second in the order 3, 0, 1, 2, 4, 5: prompts 4 and 5 start at
    the first and second finish, and the last intervals are split among fewer than four."""
    sharing = SharedTime(count=6, width=4, now=0.0)
    shares = {j: sharing.finish(j, now=t) for t, j in enumerate([3, 0, 1, 2, 4, 5], start=1)}
    quarter = 0.25
    assert shares == pytest.approx({3: quarter, 0: 2 * quarter, 1: 3 * quarter, 2: 3 * quarter + 1 / 3,
                                    4: 2 * quarter + 1 / 3 + 1 / 2, 5: quarter + 1 / 3 + 1 / 2 + 1})
    assert sum(shares.values()) == pytest.approx(6.0)  # the wall time, shared out


def test_modelled_clock_comes_from_the_calibration_not_the_batch(pair64, tmp_path):
    cfg = _cfg("runtime.batch_size=4", "block.stop=uncertainty")
    results = evaluate_methods(pair=pair64, examples=EXAMPLES[:4], cfg=dataclasses.replace(
        cfg, methods=["llm", "hlm", "u_hlm", "block_hlm"]), encoder=None, store=None)
    with pytest.raises(ConfigError, match="batched passes"):
        run_clock(results=results, cfg=cfg)
    cal = calibrate(pair=pair64, prompt_ids=[2, 3, 4, 5], cfg=cfg, folder=tmp_path)
    again = calibrate(pair=pair64, prompt_ids=[9, 9], cfg=cfg, folder=tmp_path)
    assert again == cal  # read from the cache: the same figures in every run on this machine
    assert len(cal.llm_pass_s) == cfg.block.max_drafts + 2 and cal.tau_slm_s > 0 and cal.tau_llm_s > 0
    assert set(cal.tau_measure_s) == {"temperature", "entropy"}  # U-HLM's and CU-HLM's measures
    first = summarize_methods(results=results, cfg=cfg, calibration=cal)
    # the records' measured times do not enter the modelled clock: scramble them, the figures stay
    for rs in results.values():
        for res in rs:
            for r in res.records:
                r.tau_slm_s, r.tau_llm_s, r.tau_uncertainty_s = 9.0, 9.0, r.tau_uncertainty_s and 7.0
    second = summarize_methods(results=results, cfg=cfg, calibration=cal)
    for method in first:
        assert second[method]["throughput_modelled"] == first[method]["throughput_modelled"]
        assert first[method]["clock_calibrated"] == 1.0
    assert first["llm"]["tau_llm_ms"] == pytest.approx(cal.tau_llm_s * 1e3)


def test_calibration_is_kept_per_machine(pair64, tmp_path, monkeypatch):
    cfg = _cfg()
    here = calibrate(pair=pair64, prompt_ids=[2, 3, 4], cfg=cfg, folder=tmp_path)
    monkeypatch.setattr(calibration_module, "machine_name", lambda device: "cpu:another machine:2 threads")
    there = calibrate(pair=pair64, prompt_ids=[2, 3, 4], cfg=cfg, folder=tmp_path)
    assert there.key != here.key and there.machine == "cpu:another machine:2 threads"
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_measured_timing_refuses_batches():
    with pytest.raises(ConfigError, match="runtime.batch_size"):
        load_config(overrides=["clock.timing=measured", "runtime.batch_size=8"])
    with pytest.raises(ConfigError, match="clock.timing"):
        load_config(overrides=["clock.timing=guessed"])


def test_median_seconds_drops_the_warmup_and_takes_the_median(monkeypatch):
    clock = [0.0]
    steps = iter([5.0, 0.3, 0.1, 0.2])  # the warm-up call is the slow one

    def call() -> None:
        clock[0] += next(steps)

    monkeypatch.setattr(calibration_module.time, "perf_counter", lambda: clock[0])
    assert calibration_module.median_seconds(call, repeats=3) == pytest.approx(0.2)
    with pytest.raises(StopIteration):  # exactly 1 + 3 calls were made
        call()
