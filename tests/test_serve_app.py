"""The verifier as a Serve application: serve_config.yaml against Serve's own schema, the builder's refusals, and a
real `serve run` of that config, and a real `serve deploy` of it onto a running head through its dashboard (tiny
random-weight pair: mechanics), each verifying one block over HTTP.

The `serve run` test starts its own Ray head (`ray start` in a temp dir, every fixed port replaced by a free one) so
that it never joins another Ray on this machine, and stops exactly the processes it started: the `serve run` process
group, then every process whose command line names that temp dir. (`ray stop` would stop every Ray here.)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests
import yaml

from tests.ports import free_port
from uhlm_ray.validation import ConfigError

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's `ray` and `serve` CLIs
SERVE_CONFIG = ROOT / "serve_config.yaml"


def _repo_config() -> dict:
    return yaml.safe_load(SERVE_CONFIG.read_text())


def test_the_repos_serve_config_is_a_valid_serve_config_for_the_verifier():
    from ray.serve import Application
    from ray.serve.schema import ServeDeploySchema

    from actors.verifier_deployment import APP_NAME, app, config_from_args

    schema = ServeDeploySchema.model_validate(_repo_config())  # what `serve run` / `serve deploy` parse it with
    assert schema.http_options.host == "127.0.0.1"  # loopback only (Serve's own schema default is 0.0.0.0)
    (verifier,) = schema.applications
    assert (verifier.name, verifier.route_prefix, verifier.import_path) == \
           (APP_NAME, "/verifier", "actors.verifier_deployment:app")
    assert verifier.runtime_env == {}  # the project is installed on every node
    cfg = config_from_args(args=verifier.args)
    assert cfg.model.pair == "qwen2.5-coder-embedded" and cfg.runtime.max_batch_size == verifier.args[
        "runtime.max_batch_size"]
    assert isinstance(app(verifier.args), Application)  # binding loads no model


def test_the_builder_takes_yaml_values_and_a_config_file(tmp_path):
    from actors.verifier_deployment import config_from_args

    cfg = config_from_args(args={"runtime.verifier_resources": {"verifier": 1}, "runtime.max_ongoing_requests": None,
                                 "model.num_threads": 2, "runtime.share_prefixes": False})
    assert dict(cfg.runtime.verifier_resources) == {"verifier": 1.0} and cfg.runtime.max_ongoing_requests is None
    assert cfg.model.num_threads == 2 and cfg.runtime.share_prefixes is False
    config = tmp_path / "verifier.yaml"
    config.write_text("runtime: {max_batch_size: 4, batch_wait_timeout_s: 0.01}\n")
    cfg = config_from_args(args={"config": str(config), "runtime.max_batch_size": "8"})  # overrides win
    assert (cfg.runtime.max_batch_size, cfg.runtime.batch_wait_timeout_s) == (8, 0.01)


@pytest.mark.parametrize(("args", "field"), [
    ({"model.pear": "custom"}, "model.pear"),  # unknown key
    ({"runtime.max_batch_size": "many"}, "runtime.max_batch_size"),  # wrong type
    ({"runtime.max_batch_size": "0"}, "runtime.max_batch_size"),  # out of range
    ({"model.pair": "tiny"}, "model.pair"),  # not a pair
    ({"model.pair": "custom", "model.slm": "/x"}, "model.pair"),  # custom without its LLM
    ({"config": "/nonexistent/verifier.yaml"}, "/nonexistent/verifier.yaml"),
])
def test_a_bad_arg_is_a_config_error_naming_the_field(args, field):
    from actors.verifier_deployment import app

    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        app(args)


def _wait_for(url: str, *, process: subprocess.Popen, log: Path, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    last = "no reply"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"`serve run` exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            reply = requests.get(url, timeout=5)
            last = f"{reply.status_code} {reply.text[:200]!r}"
            if reply.status_code == 200:
                return reply.json()
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or the proxy still starting
            pass
        except requests.JSONDecodeError:  # a 200 with no body, seen once in CI while the app deployed
            pass
        time.sleep(1.0)
    pytest.fail(f"{url} did not answer with JSON within {timeout_s:.0f} s (last: {last}); "
                f"`serve run` said:\n{log.read_text()[-4000:]}")


def _ours(temp_dir: str) -> list:
    """Every process this test's Ray started: each names the unique temp dir on its command line."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.pid != os.getpid() and any(temp_dir in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except psutil.Error:
            pass
    return found


def _stop(process: subprocess.Popen | None, *, temp_dir: str) -> None:
    import psutil

    if process is not None and process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)  # `serve run` shuts Serve down on Ctrl-C
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        procs = _ours(temp_dir)
        for proc in procs:
            try:
                proc.send_signal(sig)
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=wait_s)


def _config_for_tiny_pair(*, tiny_pair_dirs, tmp_path: Path) -> tuple[Path, int, dict]:
    """serve_config.yaml switched to the tiny pair on a free HTTP port: (its path, the port, the verifier's args)."""
    slm, llm = tiny_pair_dirs
    http_port = free_port()
    config = _repo_config()
    config["http_options"]["port"] = http_port
    (verifier,) = config["applications"]
    verifier["args"].update({"model.pair": "custom", "model.slm": slm, "model.llm": llm, "model.dtype": "float32",
                             "model.num_threads": 1})
    config_path = tmp_path / "serve_config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return config_path, http_port, verifier["args"]


def _start_head(*, temp_dir: str, env: dict, dashboard_port: int | None = None) -> int:
    """`ray start --head` in `temp_dir`, every fixed port replaced by a free one; the dashboard (which `serve deploy`
    talks to) only when a port is given. Returns the GCS port."""
    gcs_port = free_port()
    dashboard = ["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}"] \
        if dashboard_port is not None else ["--include-dashboard=false"]
    started = subprocess.run(
        [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs_port}", "--num-cpus=2",
         *dashboard, f"--temp-dir={temp_dir}", "--object-store-memory=100000000", "--disable-usage-stats",
         f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
         f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
         f"--metrics-export-port={free_port()}"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=180, start_new_session=True)
    assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
    return gcs_port


def _verifies_one_block(*, url: str, tiny_pair, max_batch_size: int) -> None:
    """The health route, then a 3-draft truncated block over HTTP, whose verdict equals the in-process core's."""
    import torch

    from uhlm_ray.base_station.verifier import Verifier
    from uhlm_ray.protocol import BlockRequest
    from uhlm_ray.sampling.rng import SessionKey

    vocab = tiny_pair.vocab_size
    health = requests.get(f"{url}/v1/health", timeout=30).json()
    assert health["vocab_size"] == vocab and health["max_batch_size"] == max_batch_size
    prompt, drafts = [2, 3, 4, 5], [9, 4, 7]
    opened = requests.post(f"{url}/v1/sessions", json={"session_id": "serve-run", "prompt_token_ids": prompt,
                                                       "seed": 3, "device_index": 1, "prompt_index": 2},
                           timeout=60)
    assert opened.status_code == 200, opened.text
    payload = {"format": "truncated", "token_ids": [[9, 3], [4, 5], [7]], "probs": [[0.75, 0.25], [0.5, 0.5],
                                                                                 [1.0]]}
    answer = requests.post(f"{url}/v1/sessions/serve-run/block", timeout=60, headers={"x-session-id": "serve-run"},
                           json={"round": 1, "draft_token_ids": drafts, "payload": payload})
    assert answer.status_code == 200, answer.text
    got = answer.json()
    n = got["num_accepted"]
    assert 0 <= n <= len(drafts) and got["token_ids"][:n] == drafts[:n] and len(got["token_ids"]) == n + 1
    assert got["bonus"] == (n == len(drafts)) and got["recovered"] == (n < len(drafts))
    assert all(0 <= t < vocab for t in got["token_ids"]) and got["pass_tokens"] == len(drafts)
    # the same verdict as the in-process core with the same key and distributions
    probs = torch.zeros(len(drafts), vocab)
    for row, (ids, ps) in enumerate(zip(payload["token_ids"], payload["probs"], strict=True)):
        probs[row, ids] = torch.tensor(ps)
    local = Verifier(model=tiny_pair.llm)
    local.open(session_id="s", prompt_ids=prompt, key=SessionKey(seed=3, device=1, prompt=2))
    (expected,) = local.verify_blocks([BlockRequest(session_id="s", round_index=1, new_tokens=[], drafts=drafts,
                                                    draft_probs=probs)])
    assert (got["token_ids"], n) == (expected.tokens, expected.num_accepted)
    assert got["y_d"] == pytest.approx(expected.y_d, abs=1e-6)
    assert requests.delete(f"{url}/v1/sessions/serve-run", timeout=30).json() == {"closed": True}


def _ray_env() -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    return env


def test_serve_run_of_the_config_verifies_a_block_over_http(tiny_pair, tiny_pair_dirs, tmp_path):
    config_path, http_port, args = _config_for_tiny_pair(tiny_pair_dirs=tiny_pair_dirs, tmp_path=tmp_path)
    # short: Ray's socket paths under it must fit in 107 bytes
    temp_dir = tempfile.mkdtemp(prefix="uhlm-serve-", dir="/tmp")
    env = _ray_env()
    log = tmp_path / "serve_run.log"
    serve_run = None
    try:
        gcs_port = _start_head(temp_dir=temp_dir, env=env)
        with log.open("w") as out:
            serve_run = subprocess.Popen(
                [str(BIN / "serve"), "run", str(config_path), f"--address=127.0.0.1:{gcs_port}"],
                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{http_port}/verifier"
        _wait_for(f"{url}/v1/health", process=serve_run, log=log, timeout_s=300)
        _verifies_one_block(url=url, tiny_pair=tiny_pair, max_batch_size=args["runtime.max_batch_size"])
    finally:
        _stop(serve_run, temp_dir=temp_dir)
        left = _ours(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not left, f"processes left behind: {[p.pid for p in left]}"
    # Serve's HTTP proxy is a Ray worker ("ray::ProxyActor" on its command line, no temp dir), which exits once its
    # raylet is gone: give it a moment, then the route must be closed
    assert _closed(f"http://127.0.0.1:{http_port}/verifier/v1/health", timeout_s=60)


def _closed(url: str, *, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=5)
        except requests.ConnectionError:
            return True
        time.sleep(1.0)
    return False


def test_serve_deploy_of_the_config_onto_a_running_cluster_verifies_a_block(tiny_pair, tiny_pair_dirs, tmp_path):
    """`serve deploy` through the head's dashboard (as on a `ray up` cluster), `serve status` until RUNNING, one
    block over HTTP, then `serve shutdown` takes the application down."""
    config_path, http_port, args = _config_for_tiny_pair(tiny_pair_dirs=tiny_pair_dirs, tmp_path=tmp_path)
    temp_dir = tempfile.mkdtemp(prefix="uhlm-sdep-", dir="/tmp")
    env = _ray_env()
    dashboard = f"http://127.0.0.1:{free_port()}"
    serve = [str(BIN / "serve")]
    try:
        _start_head(temp_dir=temp_dir, env=env, dashboard_port=int(dashboard.rsplit(":", 1)[1]))
        deadline = time.monotonic() + 120
        while True:  # the dashboard's HTTP server comes up a little after `ray start` returns
            deployed = subprocess.run([*serve, "deploy", str(config_path), "-a", dashboard], env=env, cwd=ROOT,
                                      capture_output=True, text=True, timeout=120)
            if deployed.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(2.0)
        assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
        url = f"http://127.0.0.1:{http_port}/verifier"
        deadline, status = time.monotonic() + 300, {}
        while time.monotonic() < deadline:
            shown = subprocess.run([*serve, "status", "-a", dashboard], env=env, cwd=ROOT, capture_output=True,
                                   text=True, timeout=60)
            status = yaml.safe_load(shown.stdout) or {}
            app_status = status.get("applications", {}).get("uhlm-verifier", {}).get("status")
            assert app_status not in ("DEPLOY_FAILED", "UNHEALTHY"), shown.stdout[-4000:]
            if app_status == "RUNNING":
                break
            time.sleep(2.0)
        assert status["applications"]["uhlm-verifier"]["status"] == "RUNNING", status
        _verifies_one_block(url=url, tiny_pair=tiny_pair, max_batch_size=args["runtime.max_batch_size"])
        down = subprocess.run([*serve, "shutdown", "-y", "-a", dashboard], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]
    finally:
        _stop(None, temp_dir=temp_dir)
        left = _ours(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not left, f"processes left behind: {[p.pid for p in left]}"
