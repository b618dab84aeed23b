"""The distributed runtime on a real local Ray with a real Serve deployment (tiny random-weight pair: mechanics).

One Ray instance and one verifier deployment for the module: the one-device cell against the core loop, an 8-device
cell against solo runs, a device actor killed mid-run, and the HTTP route.
"""

from __future__ import annotations

import copy
import json

import pytest
import requests

from tests.ports import free_port
from uhlm_ray.cell import device_channel, device_distances, summarize_cell
from uhlm_ray.config import EvaluateConfig, ModelConfig
from uhlm_ray.decode import decode_prompt, make_policy
from uhlm_ray.experiments.datasets import Example
from uhlm_ray.experiments.evaluate import ResultStore
from uhlm_ray.measures.clock import ModelledClock
from uhlm_ray.measures.similarity import load_encoder
from uhlm_ray.models.chat import chat_prompt_ids

ray = pytest.importorskip("ray")

EXAMPLES = [
    Example(id=f"ex{i}", prompt=prompt, reference="the cat sat on the mat")
    for i, prompt in enumerate(["the cat sat", "a dog is big", "red and blue", "the mat is small", "the dog sat"])
]


def test_the_prompts_are_the_word_ids_they_spell(tiny_pair):
    """The fixture's tokenizer reloads as built: each prompt is its own list of word ids (not a collapsed [3, 3])."""
    ids = [chat_prompt_ids(tokenizer=tiny_pair.tokenizer, prompt=e.prompt) for e in EXAMPLES]
    assert ids[0] == [2, 4, 6]  # the cat sat
    assert len({tuple(i) for i in ids}) == len(EXAMPLES)
    assert all(0 <= t < tiny_pair.vocab_size for i in ids for t in i)


def _cfg(tiny_pair_dirs, **cell) -> EvaluateConfig:
    slm, llm = tiny_pair_dirs
    cfg = EvaluateConfig(model=ModelConfig(pair="custom", slm=slm, llm=llm, dtype="float32", num_threads=1))
    cfg.decode.max_new_tokens = 10
    cfg.policy.u_th = 0.3
    cfg.tracking.enabled = False
    cfg.runtime.device_actor_num_cpus = 0.5
    for key, value in cell.items():
        setattr(cfg.cell, key, value)
    return cfg


@pytest.fixture(scope="module")
def verifier(tiny_pair_dirs):
    from ray import serve

    from actors.verifier_deployment import start_verifier

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    cfg = _cfg(tiny_pair_dirs)
    cfg.runtime.http_port = free_port()
    start_verifier(cfg)
    yield cfg
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("use")


def _core_tokens(tiny_pair, cfg, *, device, prompt_index, example):
    """The core loop's decode of one device's prompt, at that device's distance in the cell: on a fading process
    in time an upload's length (so the time, and the gain, of every later round) depends on its average SNR."""
    ids = chat_prompt_ids(tokenizer=tiny_pair.tokenizer, prompt=example.prompt)
    cfg = copy.deepcopy(cfg)
    cfg.channel = device_channel(channel=cfg.channel, distance_m=device_distances(cfg.cell)[device])
    policy = make_policy(method=cfg.cell.method, cfg=cfg)
    return decode_prompt(pair=tiny_pair, prompt_ids=ids, prompt_index=prompt_index, method=cfg.cell.method, cfg=cfg,
                         policy=policy, device_index=device)


def test_one_device_cell_equals_the_core_loop(verifier, tiny_pair, tiny_pair_dirs, tmp_path, encoder):
    from actors.cell_runner import run_cell

    cfg = _cfg(tiny_pair_dirs, n_devices=1, prompts_per_device=3)
    results = run_cell(cfg=cfg, examples=EXAMPLES, store=ResultStore(tmp_path), encoder=encoder, run="one")
    assert [(r.device_index, r.prompt_index) for r in results] == [(0, 0), (0, 1), (0, 2)]
    for result in results:
        tokens, records, _, _ = _core_tokens(tiny_pair, cfg, device=0, prompt_index=result.prompt_index,
                                             example=EXAMPLES[result.prompt_index])
        assert result.tokens == tokens
        for cell_r, core_r in zip(result.records, records, strict=True):
            assert (cell_r.draft, cell_r.sent, cell_r.accepted, cell_r.resampled) == \
                   (core_r.draft, core_r.sent, core_r.accepted, core_r.resampled)
            assert cell_r.y_d == pytest.approx(core_r.y_d, abs=1e-5, nan_ok=True)
            assert cell_r.fading_gain == core_r.fading_gain


def test_eight_devices_complete_and_match_their_solo_runs(verifier, tiny_pair, tiny_pair_dirs, tmp_path, encoder):
    from actors.cell_runner import run_cell

    cfg = _cfg(tiny_pair_dirs, n_devices=8, prompts_per_device=2, devices_per_actor=4, method="hlm")
    results = run_cell(cfg=cfg, examples=EXAMPLES, store=ResultStore(tmp_path), encoder=encoder, run="eight")
    keys = [(r.device_index, r.prompt_index) for r in results]
    assert sorted(keys) == sorted((d, k * 8 + d) for d in range(8) for k in range(2))
    lines = (tmp_path / "hlm.jsonl").read_text().splitlines()
    assert len(lines) == 16  # each prompt stored once
    # the verifier really batched requests from different devices
    assert max(r.verify_batch_size for res in results for r in res.records) > 1
    # draws keyed by (device, prompt, round): the same tokens as each device decoding alone in the core loop
    for result in results:
        tokens, _, _, _ = _core_tokens(tiny_pair, cfg, device=result.device_index, prompt_index=result.prompt_index,
                                       example=EXAMPLES[result.prompt_index % len(EXAMPLES)])
        assert result.tokens == tokens, (result.device_index, result.prompt_index)
    summary = summarize_cell(results=results, distances_m=[500.0 + 100 * d for d in range(8)],
                             channel=cfg.channel, clock=ModelledClock(tau_slm=0.02, tau_llm=0.1), seed=0)
    assert summary["cell"]["num_devices"] == 8 and summary["cell"]["transmission_rate"] == 1.0
    assert summary["cell"]["max_transmitters_per_slot"] == 8
    assert set(summary["devices"]) == set(range(8))


def test_killed_device_actor_restarts_and_no_prompt_is_lost_or_doubled(verifier, tiny_pair_dirs, tmp_path, encoder,
                                                                        capsys):
    from actors.cell_runner import run_cell

    # 12 prompts per actor of up to 32 tokens: the stream is far from its end when the kill lands
    cfg = _cfg(tiny_pair_dirs, n_devices=4, prompts_per_device=6, devices_per_actor=2, method="u_hlm")
    cfg.decode.max_new_tokens = 32
    pids: list[int] = []

    def kill_first_actor_once(group: int, actors: list) -> None:
        if group != 0:
            return
        pids.append(ray.get(actors[0].pid.remote()))
        if len(pids) == 1:  # its other prompts are in flight now: kill the process under them
            ray.kill(actors[0], no_restart=False)

    results = run_cell(cfg=cfg, examples=EXAMPLES, store=ResultStore(tmp_path), encoder=encoder, run="kill",
                       on_stored=kill_first_actor_once)
    assert len(pids) >= 2 and pids[-1] != pids[0], "the actor was restarted in a new process"
    said = capsys.readouterr().err
    assert "[cell] device actor 0 died" in said, "the stream was cut and its unstored prompts handed on"
    keys = [(r.device_index, r.prompt_index) for r in results]
    assert len(keys) == len(set(keys)) == 24
    stored = [json.loads(line) for line in (tmp_path / "u_hlm.jsonl").read_text().splitlines()]
    assert sorted((s["device_index"], s["prompt_index"]) for s in stored) == sorted(keys)


def test_an_actor_gone_for_good_ends_the_run_with_its_error(verifier, tiny_pair_dirs, tmp_path, encoder):
    """Unlimited restarts (-1) must not mean handing prompts to a dead actor forever: killed with no restart, the
    run stops with the actor's error, and what was stored stays stored."""
    from ray.exceptions import RayActorError

    from actors.cell_runner import run_cell

    # 40 prompts of up to 32 tokens: the stream is far from its end when the first result has been scored
    cfg = _cfg(tiny_pair_dirs, n_devices=2, prompts_per_device=20, devices_per_actor=2, method="u_hlm")
    cfg.decode.max_new_tokens = 32
    cfg.runtime.actor_max_restarts = -1

    def kill_for_good(group: int, actors: list) -> None:
        ray.kill(actors[group], no_restart=True)

    with pytest.raises(RayActorError):
        run_cell(cfg=cfg, examples=EXAMPLES, store=ResultStore(tmp_path), encoder=encoder, run="gone",
                 on_stored=kill_for_good)
    assert 1 <= len((tmp_path / "u_hlm.jsonl").read_text().splitlines()) < 40
    # the dead actor's sessions stay open on the verifier (its next run would reopen them): close them here, so the
    # module's verifier is as the other tests left it
    from actors.verifier_deployment import ServeVerifierClient

    handle = ServeVerifierClient().handle
    left = [sid for sid in handle.sessions.remote().result()["rounds"] if sid.startswith("gone:")]
    assert left, "the sessions in flight when the actor died"
    for sid in left:
        handle.close.remote(sid).result()


def _url(cfg, path: str) -> str:
    return f"http://127.0.0.1:{cfg.runtime.http_port}/verifier{path}"


def test_http_route_verifies_and_rejects_bad_input_naming_the_field(verifier, tiny_pair):
    import torch

    from uhlm_ray.base_station.verifier import Verifier
    from uhlm_ray.protocol import VerifyRequest
    from uhlm_ray.sampling.rng import SessionKey

    cfg = verifier
    health = requests.get(_url(cfg, "/v1/health"), timeout=30).json()
    vocab = health["vocab_size"]
    assert vocab == tiny_pair.vocab_size
    prompt = [2, 3, 4, 5]
    opened = requests.post(_url(cfg, "/v1/sessions"), json={"session_id": "http-1", "prompt_token_ids": prompt,
                                                            "seed": 7, "device_index": 2, "prompt_index": 1},
                           timeout=30)
    assert opened.status_code == 200, opened.text
    x = torch.softmax(torch.linspace(-2, 2, vocab), 0)
    body = {"round": 1, "draft_token_id": 9, "new_token_ids": [],
            "distribution": {"format": "full", "probs": x.tolist()}}
    answer = requests.post(_url(cfg, "/v1/sessions/http-1/verify"), json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    # the same verdict as the in-process verifier with the same key
    local = Verifier(model=tiny_pair.llm)
    local.open(session_id="s", prompt_ids=prompt, key=SessionKey(seed=7, device=2, prompt=1))
    (expected,) = local.verify([VerifyRequest(session_id="s", round_index=1, draft=9, new_tokens=[], draft_probs=x)])
    assert answer.json()["token_id"] == expected.token
    assert answer.json()["y_d"] == pytest.approx(expected.y_d, abs=1e-6)

    truncated = {"round": 2, "draft_token_id": 3, "new_token_ids": [answer.json()["token_id"]],
                 "distribution": {"format": "truncated", "token_ids": [3, 4], "probs": [0.75, 0.25]}}
    assert requests.post(_url(cfg, "/v1/sessions/http-1/verify"), json=truncated, timeout=30).status_code == 200

    def rejected(payload, status=422, session="http-1"):
        reply = requests.post(_url(cfg, f"/v1/sessions/{session}/verify"), json=payload, timeout=30)
        assert reply.status_code == status, reply.text
        return reply.json()["detail"]

    def names(detail, field):
        return any(field in [str(part) for part in err["loc"]] for err in detail)

    assert names(rejected({k: v for k, v in body.items() if k != "draft_token_id"}), "draft_token_id")
    assert names(rejected({**body, "round": 0}), "round")
    assert names(rejected({**body, "draft_token_id": vocab}), "draft_token_id")
    assert names(rejected({**body, "distribution": {"format": "full", "probs": [1.0]}}), "probs")
    assert names(rejected({**body, "distribution": {"format": "full", "probs": [0.5] * vocab}}), "probs")
    assert names(rejected({**body, "distribution": {"format": "zip", "probs": [1.0]}}), "distribution")
    assert names(rejected({**body, "extra": 1}), "extra")
    assert "not open" in rejected(body, status=404, session="nobody")
    too_big = requests.post(_url(cfg, "/v1/sessions/http-1/verify"), data=b"[" + b"0," * 5_000_000 + b"0]",
                            headers={"content-type": "application/json"}, timeout=60)
    assert too_big.status_code == 413
    assert requests.delete(_url(cfg, "/v1/sessions/http-1"), timeout=30).json() == {"closed": True}
    assert requests.get(_url(cfg, "/v1/health"), timeout=30).json()["sessions"] == 0


def test_block_cell_equals_the_core_loop_and_batches_blocks_of_different_lengths(verifier, tiny_pair, tiny_pair_dirs,
                                                                                 tmp_path, encoder):
    """Four devices run the block method against the Serve verifier: the same tokens and verdicts as each device
    alone in the core loop (float32), and blocks of different lengths verified together in one padded batch."""
    from actors.cell_runner import run_cell

    cfg = _cfg(tiny_pair_dirs, n_devices=4, prompts_per_device=1, devices_per_actor=4, method="block_hlm")
    cfg.block.stop, cfg.block.stop_u_th, cfg.block.payload = "uncertainty", 0.5, "truncated"
    results = run_cell(cfg=cfg, examples=EXAMPLES, store=ResultStore(tmp_path), encoder=encoder, run="blocks")
    mixed = False
    for result in results:
        tokens, records, _, _ = _core_tokens(tiny_pair, cfg, device=result.device_index,
                                             prompt_index=result.prompt_index, example=EXAMPLES[result.prompt_index])
        assert result.tokens == tokens
        for cell_r, core_r in zip(result.records, records, strict=True):
            assert (cell_r.drafts, cell_r.num_accepted, cell_r.tokens) == (core_r.drafts, core_r.num_accepted,
                                                                             core_r.tokens)
            mixed |= cell_r.verify_batch_size > 1
    lengths = {len(r.drafts) for res in results for r in res.records}
    assert mixed and len(lengths) > 1, "blocks of several lengths from several devices shared batches"
    summary = summarize_cell(results=results, distances_m=[500.0] * 4, channel=cfg.channel,
                             clock=ModelledClock(tau_slm=0.02, tau_llm=0.1), seed=0)
    assert summary["cell"]["mean_accepted_length"] >= 1.0 and summary["cell"]["exact"] == 1.0


def test_cell_devices_decode_at_their_planned_block_lengths(verifier, tiny_pair_dirs, tmp_path, encoder):
    """A plan's lengths reach each device actor's stop rule: device 0 drafts blocks of one, device 1 of three at
    most (fewer only where max_new_tokens or a drafted end of sequence cuts a block)."""
    from actors.cell_runner import run_cell

    cfg = _cfg(tiny_pair_dirs, n_devices=2, prompts_per_device=1, devices_per_actor=2, method="block_hlm")
    cfg.block.stop, cfg.block.max_drafts = "fixed", 4
    results = run_cell(cfg=cfg, examples=EXAMPLES, store=ResultStore(tmp_path), encoder=encoder, run="planned",
                       drafts={0: 1, 1: 3})
    sizes = {result.device_index: [len(r.drafts) for r in result.records] for result in results}
    assert sizes[0] and set(sizes[0]) == {1}
    assert max(sizes[1]) == 3


def test_http_block_route_verifies_as_the_core_and_names_bad_fields(verifier, tiny_pair):
    import torch

    from uhlm_ray.base_station.verifier import Verifier
    from uhlm_ray.protocol import BlockRequest
    from uhlm_ray.sampling.rng import SessionKey

    cfg = verifier
    vocab = tiny_pair.vocab_size
    prompt = [2, 3, 4, 5]
    local = Verifier(model=tiny_pair.llm)
    x = torch.softmax(torch.linspace(-2, 2, vocab), 0)
    for format_, payload, probs in (
        ("ids", {"format": "ids"}, None),
        ("full", {"format": "full", "probs": [x.tolist()] * 2}, torch.stack([x, x])),
        ("truncated", {"format": "truncated", "token_ids": [[9, 3], [4]], "probs": [[0.75, 0.25], [1.0]]}, None),
    ):
        session = f"block-{format_}"
        opened = requests.post(_url(cfg, "/v1/sessions"), json={"session_id": session, "prompt_token_ids": prompt,
                                                                "seed": 3}, timeout=30)
        assert opened.status_code == 200, opened.text
        drafts = [9, 4]
        answer = requests.post(_url(cfg, f"/v1/sessions/{session}/block"), timeout=30,
                               json={"round": 1, "draft_token_ids": drafts, "payload": payload})
        assert answer.status_code == 200, answer.text
        if format_ == "truncated":
            probs = torch.zeros(2, vocab)
            probs[0, 9], probs[0, 3], probs[1, 4] = 0.75, 0.25, 1.0
        local.open(session_id=session, prompt_ids=prompt, key=SessionKey(seed=3, device=0, prompt=0))
        (expected,) = local.verify_blocks([BlockRequest(session_id=session, round_index=1, new_tokens=[],
                                                        drafts=drafts, draft_probs=probs)])
        got = answer.json()
        assert got["token_ids"] == expected.tokens and got["num_accepted"] == expected.num_accepted
        assert got["y_d"] == pytest.approx(expected.y_d, abs=1e-6) and got["pass_tokens"] == 2

    def rejected(payload):
        reply = requests.post(_url(cfg, "/v1/sessions/block-ids/block"), json=payload, timeout=30)
        assert reply.status_code == 422, reply.text
        return reply.json()["detail"]

    def names(detail, field):
        return any(field in [str(part) for part in err["loc"]] for err in detail) or \
            any(field in err["msg"] for err in detail)

    good = {"round": 2, "new_token_ids": [1], "draft_token_ids": [4], "payload": {"format": "ids"}}
    assert names(rejected({**good, "draft_token_ids": []}), "draft_token_ids")
    assert names(rejected({**good, "draft_token_ids": [vocab]}), "draft_token_ids")
    assert names(rejected({**good, "verify": [True, False]}), "verify")
    assert names(rejected({**good, "payload": {"format": "full", "probs": [[1.0]]}}), "probs")
    assert names(rejected({**good, "payload": {"format": "truncated", "token_ids": [[4]], "probs": [[0.5]]}}),
                 "probs")
    assert names(rejected({**good, "payload": {"format": "truncated", "token_ids": [[3]], "probs": [[1.0]]}}),
                 "draft_token_ids")


def test_http_faults_are_clear_refusals(verifier, tiny_pair):
    """NaN or Infinity probabilities, bodies over the limit sent chunked, and 422 answers that echo nothing."""
    cfg = verifier
    vocab = tiny_pair.vocab_size
    opened = requests.post(_url(cfg, "/v1/sessions"), json={"session_id": "faults", "prompt_token_ids": [2, 3]},
                           timeout=30)
    assert opened.status_code == 200
    url = _url(cfg, "/v1/sessions/faults/verify")
    for constant in ("NaN", "Infinity", "-Infinity"):
        probs = ", ".join([constant] + ["0.0"] * (vocab - 1))
        raw = f'{{"round": 1, "draft_token_id": 0, "distribution": {{"format": "full", "probs": [{probs}]}}}}'
        reply = requests.post(url, data=raw, headers={"content-type": "application/json"}, timeout=30)
        assert reply.status_code == 422, (constant, reply.status_code, reply.text[:300])
        detail = reply.json()["detail"]  # valid JSON: nothing non-finite echoed back
        assert any("probs" in [str(p) for p in e["loc"]] for e in detail)
        assert all("input" not in e for e in detail)
    # a malformed full distribution: the answer names the field, and is small (the 151,936 floats are not echoed)
    bad = {"round": 1, "draft_token_id": 0, "distribution": {"format": "full", "probs": [-0.5] * vocab}}
    reply = requests.post(url, json=bad, timeout=30)
    assert reply.status_code == 422 and len(reply.content) < 4096 and "input" not in reply.text

    def chunks():  # no Content-Length: the limit must hold on the bytes that arrive
        yield b'{"round": 1, "draft_token_id": 0, "distribution": {"format": "full", "probs": ['
        for _ in range(1_200):
            yield b"0.0, " * 2_000
        yield b"0.0]}}"

    reply = requests.post(url, data=chunks(), headers={"content-type": "application/json"}, timeout=120)
    assert reply.status_code == 413 and "exceeds" in reply.json()["detail"][0]["msg"]
    # the 404 of a session this replica does not hold says how to route a session's calls
    lost = requests.post(_url(cfg, "/v1/sessions/nobody/verify"), timeout=30,
                         json={"round": 1, "draft_token_id": 0, "distribution": {"format": "truncated",
                                                                                 "token_ids": [0], "probs": [1.0]}})
    assert lost.status_code == 404 and "x-session-id" in lost.json()["detail"]
    assert requests.delete(_url(cfg, "/v1/sessions/faults"), timeout=30).json() == {"closed": True}


def test_the_printed_verifier_address_is_the_one_serve_runs(verifier):
    from ray import serve

    from actors.verifier_deployment import verifier_url

    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})  # ignored: Serve is already running
    url = verifier_url()
    assert url == f"http://127.0.0.1:{verifier.runtime.http_port}/verifier"
    assert requests.get(f"{url}/v1/health", timeout=30).ok


def test_coupled_blocks_through_serve_emit_the_llm_alones_tokens(verifier, tiny_pair, tiny_pair_dirs, tmp_path):
    """500 keys (10 devices x 50 prompts) of the coupled block method against the Serve verifier emit, token for
    token, what the LLM alone emits with the same keys in process."""
    from actors.cell_runner import run_cell
    from uhlm_ray.decode import decode_batch, device_job
    from uhlm_ray.measures.similarity import timing_only_encoder

    cfg = _cfg(tiny_pair_dirs, n_devices=10, prompts_per_device=50, devices_per_actor=10, method="block_hlm")
    cfg.decode.sampling, cfg.decode.max_new_tokens = "coupled", 12
    cfg.block.payload, cfg.block.stop, cfg.block.stop_u_th = "ids", "uncertainty", 0.5
    results = run_cell(cfg=cfg, examples=EXAMPLES, store=ResultStore(tmp_path), encoder=timing_only_encoder,
                       run="coupled")
    assert len(results) == 500
    jobs = [device_job(prompt_ids=chat_prompt_ids(tokenizer=tiny_pair.tokenizer,
                                                  prompt=EXAMPLES[r.prompt_index % len(EXAMPLES)].prompt),
                       prompt_index=r.prompt_index, method="llm", cfg=cfg, policy=None, device_index=r.device_index)
            for r in results]
    alone = decode_batch(pair=tiny_pair, jobs=jobs, cfg=cfg)
    assert sum(r.tokens == a.tokens for r, a in zip(results, alone, strict=True)) == 500
    assert max(r.verify_batch_size for res in results for r in res.records) > 1  # blocks shared Serve batches


def test_http_route_verifies_coupled_blocks_with_ids_and_a_position(verifier, tiny_pair):
    """Over HTTP only the ids and the first draft's position cross: the LLM alone's own tokens are all kept with
    its next token as the bonus, and a wrong draft is replaced by the LLM alone's token (after a catch-up)."""
    from uhlm_ray.config import load_config
    from uhlm_ray.decode import decode_batch, device_job

    cfg = verifier
    prompt = [2, 3, 4, 5]
    llm_cfg = load_config(overrides=["decode.max_new_tokens=6", "decode.sampling=coupled", "block.payload=ids",
                                     "decode.seed=3"])
    (alone,) = decode_batch(pair=tiny_pair, jobs=[device_job(prompt_ids=prompt, prompt_index=0, method="llm",
                                                             cfg=llm_cfg, policy=None)], cfg=llm_cfg)
    t = alone.tokens
    assert len(t) >= 5, "the reference stopped early"
    opened = requests.post(_url(cfg, "/v1/sessions"), json={"session_id": "coupled-http", "prompt_token_ids": prompt,
                                                            "seed": 3}, timeout=30)
    assert opened.status_code == 200, opened.text

    def block(body):
        answer = requests.post(_url(cfg, "/v1/sessions/coupled-http/block"), json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()

    kept = block({"round": 1, "draft_token_ids": t[:3], "payload": {"format": "coupled", "position": 1}})
    assert kept["token_ids"] == t[:4] and kept["num_accepted"] == 3 and kept["bonus"]
    wrong = (t[4] + 1) % tiny_pair.vocab_size
    replaced = block({"round": 2, "new_token_ids": [t[3]], "draft_token_ids": [wrong, t[5] if len(t) > 5 else 0],
                      "payload": {"format": "coupled", "position": 5}})
    assert replaced["token_ids"] == [t[4]] and replaced["num_accepted"] == 0 and replaced["recovered"]
    assert requests.delete(_url(cfg, "/v1/sessions/coupled-http"), timeout=30).json() == {"closed": True}
