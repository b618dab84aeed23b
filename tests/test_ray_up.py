"""`ray up cluster-onprem.yaml` for real: two SSH "machines" on this one, the file's own setup commands, jobs
submitted the way the README says, results in the head's store, and `ray down` leaving no Ray process behind.

Each node is an sshd in private mount and PID namespaces: the head on 127.0.0.3:22, the worker on 127.0.0.2:22.
Each has a home folder of its own mounted over /root (so `~/uhlm_ray`, `~/uhlm-venv` and the results are the
node's own) and a private /tmp (so the two Rays keep separate session folders), and `ray stop` on one node sees
only that node's processes. The test copy of the cluster file changes only the addresses, the user and the key;
its setup commands install the project from the checkout that `ray up` syncs, into a fresh venv on each node,
with this machine's package index. The tiny random-weight pair lies in a folder both nodes see, as a shared
dataset mount would.

Slow (two installs of the project: about 5 minutes each on 2 cores): marked `ray_up`, and run in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Ray replaces a node address of 127.0.0.1 by the machine's own, which the local provider would then not match to
# `head_ip`: the head takes another loopback address. The dashboard listens on 127.0.0.1 (the file's own setting).
HEAD, WORKER = "127.0.0.3", "127.0.0.2"
DASHBOARD = "http://127.0.0.1:8265"
SPACE = """
name: rayup
objectives:
  - {metric: u_hlm.accuracy, mode: max}
  - {metric: u_hlm.throughput_modelled, mode: max}
search: grid
methods: [llm, u_hlm]
base: {data.n_prompts: 2, decode.max_new_tokens: 6}
params:
  policy.u_th: {grid: [0.2, 0.6]}
"""


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (sshd on port 22, mount namespaces)"
    for tool in ("sshd", "ssh", "ssh-keygen", "rsync", "unshare"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"needs {tool} (apt-get install openssh-server rsync)"
    for ip in (HEAD, WORKER):  # an sshd of this machine on 0.0.0.0:22 would take the port from ours
        with socket.socket() as s:
            try:
                s.bind((ip, 22))
            except OSError as err:
                return f"needs port 22 free on {ip} ({err.strerror}): stop this machine's sshd to run it"
    probe = subprocess.run(["unshare", "--mount", "--pid", "--fork", "--mount-proc", "true"], capture_output=True)
    if probe.returncode != 0:
        return f"needs private mount and PID namespaces (unshare: {probe.stderr.decode().strip()})"
    return None


MISSING = _missing()  # once: it binds ports and starts a namespace
pytestmark = [pytest.mark.ray_up, pytest.mark.skipif(MISSING is not None, reason=str(MISSING))]


def _run(cmd: list[str], *, log: list[str], timeout: float, cwd: Path = ROOT, check: bool = True,
         env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command the way a user types it; the transcript keeps the command and its exit status."""
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)
    log.append(f"$ {' '.join(cmd)}\n-> exit {done.returncode}")
    if check:
        assert done.returncode == 0, f"{cmd[:3]} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


def _sshd(*, base: Path, ip: str, name: str) -> subprocess.Popen:
    """An SSH "machine": sshd on ip:22 with its own /root and /tmp, in namespaces of its own."""
    home = base / f"{name}-home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(base / "key.pub", home / ".ssh" / "authorized_keys")
    config = base / f"sshd-{name}.conf"
    config.write_text("\n".join([
        f"ListenAddress {ip}:22", f"HostKey {base / 'host_key'}", "PidFile none", "UsePAM no",
        "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "StrictModes no", "AuthorizedKeysFile .ssh/authorized_keys", "Subsystem sftp internal-sftp",
        f"SetEnv UHLM_NODE_IP={ip}", ""]))  # what a node's login environment says: the address Ray should use
    script = (f"mount --bind {home} /root && mount -t tmpfs tmpfs /tmp && "
              f"exec /usr/sbin/sshd -D -e -f {config}")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
    return subprocess.Popen(["unshare", "--mount", "--pid", "--fork", "--mount-proc", "--propagation", "private",
                             "sh", "-c", script], stdout=open(base / f"sshd-{name}.log", "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _ray_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "raylet|gcs_server|ray::|dashboard.py|monitor.py"], capture_output=True,
                         text=True)
    return {int(p) for p in out.stdout.split()}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "(gone)"


def _alive_nodes() -> list[dict]:
    try:
        with urllib.request.urlopen(f"{DASHBOARD}/api/v0/nodes?limit=100", timeout=10) as answer:
            nodes = json.load(answer)["data"]["result"]["result"]
    except (OSError, KeyError, ValueError):
        return []
    return [n for n in nodes if n.get("state") == "ALIVE"]


@pytest.fixture
def cluster(tmp_path):
    """The test's copy of cluster-onprem.yaml, two sshd "machines", and everything stopped afterwards."""
    from uhlm_ray.models.tiny import WORDS, save_tiny_model

    base = Path(tempfile.mkdtemp(prefix="uhlm-rayup-", dir="/var/tmp"))  # outside /tmp: both nodes see it
    for key in ("key", "host_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / key)], check=True)
    save_tiny_model(base / "models" / "slm", words=WORDS, layers=2, hidden=32, seed=1)
    save_tiny_model(base / "models" / "llm", words=WORDS, layers=3, hidden=48, seed=2)
    config = yaml.safe_load((ROOT / "cluster-onprem.yaml").read_text())
    config["provider"].update(head_ip=HEAD, worker_ips=[WORKER])
    config["cluster_name"] = base.name.replace("_", "-").lower()  # the launcher's state files are per name
    config["auth"] = {"ssh_user": "root", "ssh_private_key": str(base / "key")}
    copy = base / "cluster-test.yaml"
    copy.write_text(yaml.safe_dump(config))
    before = _ray_pids()
    nodes = [_sshd(base=base, ip=HEAD, name="head"), _sshd(base=base, ip=WORKER, name="worker")]
    log: list[str] = []
    try:
        yield base, copy, log
    finally:
        _run([str(BIN / "ray"), "down", "-y", str(copy)], log=log, timeout=600, check=False)
        # `ray down` runs `ray stop` on the head; with the local provider a worker's Ray stops on its own once the
        # head's GCS is gone (raylets give up on a lost GCS after about a minute)
        down, deadline = time.time(), time.time() + 300
        while _ray_pids() - before and time.time() < deadline:
            time.sleep(2)
        log.append(f"Ray processes left {time.time() - down:.0f} s after `ray down`: {len(_ray_pids() - before)}")
        left = {pid: _cmdline(pid) for pid in _ray_pids() - before}
        for node in nodes:
            os.killpg(node.pid, signal.SIGKILL)
            node.wait(timeout=30)
        (tmp_path / "transcript.txt").write_text("\n".join(log))
        print("\n".join(log))
        shutil.rmtree(base, ignore_errors=True)
        for state in Path(tempfile.gettempdir(), "ray").glob(f"cluster-{config['cluster_name']}.*"):
            state.unlink()
        assert not left, f"`ray down` left Ray processes behind: {left}"


def test_ray_up_brings_up_a_head_and_a_worker_that_run_the_jobs(cluster):
    from mlflow.tracking import MlflowClient

    base, copy, log = cluster
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    _run([str(BIN / "ray"), "up", "-y", "--no-config-cache", str(copy)], log=log, timeout=1500, env=env)
    deadline = time.time() + 1500  # the autoscaler installs the worker after the head is up
    while len(_alive_nodes()) < 2 and time.time() < deadline:
        time.sleep(10)
    nodes = _alive_nodes()
    log.append("nodes: " + ", ".join(f"{n['node_ip']} {n.get('resources_total', {})}" for n in nodes))
    assert sorted(n["node_ip"] for n in nodes) == sorted([HEAD, WORKER]), nodes
    worker = next(n for n in nodes if n["node_ip"] == WORKER)
    assert worker["resources_total"].get("trial") == 1 and worker["resources_total"].get("device", 0) >= 1
    head = next(n for n in nodes if n["node_ip"] == HEAD)
    assert "trial" not in head["resources_total"] and "device" not in head["resources_total"]

    space = base / "rayup.yaml"
    space.write_text(SPACE)
    models = [f"model.slm={base / 'models' / 'slm'}", f"model.llm={base / 'models' / 'llm'}", "model.pair=custom",
              "model.dtype=float32"]
    submit = [str(BIN / "ray"), "job", "submit", "--address", DASHBOARD, "--runtime-env", "runtime_env.yaml", "--"]
    sweep = _run([*submit, "python", "jobs/sweep.py", str(space), *models, "runtime.trial_resources={trial: 1}"],
                 log=log, timeout=1200, env=env)
    assert "Exact hybrid inference" in sweep.stdout, sweep.stdout[-3000:]
    job_id = next(line.split("'")[1] for line in sweep.stdout.splitlines() if "submitted successfully" in line)
    logs = _run([str(BIN / "ray"), "job", "logs", "--address", DASHBOARD, job_id], log=log, timeout=120, env=env)
    assert f"ip={WORKER}" in logs.stdout, "trial output from the worker reaches `ray job logs`"

    cell = _run([*submit, "python", "jobs/cell.py", *models, "cell.n_devices=2", "cell.devices_per_actor=1",
                 "cell.method=u_hlm", "decode.max_new_tokens=6", "data.n_prompts=1",
                 "runtime.device_actor_num_cpus=0.5", "runtime.device_actor_resources={device: 1}"],
                log=log, timeout=900, env=env)
    assert "MLflow run" in cell.stdout, cell.stdout[-3000:]

    # everything landed in the head's stable results folder, not in the jobs' temporary working copies
    results = base / "head-home" / "uhlm_ray-results"
    client = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("uhlm-sweep").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    assert {c.data.tags["uhlm.trial_node"] for c in children} == {worker["node_id"]}, "trials ran on the worker"
    assert client.search_runs([client.get_experiment_by_name("uhlm-cell").experiment_id])
    assert list((results / "outputs" / "sweeps").glob("rayup-*/report/frontier.md"))
    assert list((results / "outputs" / "cell").glob("*/*.jsonl"))
    assert not (base / "worker-home" / "uhlm_ray-results").exists(), "the worker holds no results of its own"
