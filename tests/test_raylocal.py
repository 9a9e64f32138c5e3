"""common.raylocal: a private local Ray head that accepts `ray job submit` and stops cleanly.

Each test starts a real `ray start --head` (~10 s on 2 cores); the file runs in ~45 s on
2 cores. The environment is made hostile on purpose (what an earlier in-process
`ray.init()` leaves behind: RAY_AUTH_MODE=token, a token file that is not this cluster's,
a RAY_ADDRESS pointing elsewhere) to prove the head and its clients agree on auth anyway.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import socket

import psutil
import pytest

from common.raylocal import LocalRayHead, LocalRayHeadError

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")
MARKER = "LIVEPHOTO-RAYLOCAL-OK"

pytestmark = pytest.mark.timeout(150)  # hard cap; each test takes 5-40 s


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True


def _leftovers(temp_dir) -> list[int]:
    """Processes anywhere on the machine that name this head's temp dir (a test-side check)."""
    return [p.pid for p in psutil.process_iter(["cmdline"]) if str(temp_dir) in " ".join(p.info["cmdline"] or [])]


def _write_job_dir(root: Path) -> Path:
    job_dir = root / "job"
    job_dir.mkdir()
    (job_dir / "hello.py").write_text(
        "import ray\n"
        "ray.init()\n"
        f"print('{MARKER}', int(ray.cluster_resources()['CPU']))\n"
    )
    return job_dir


def _hostile_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong_token"
    wrong.write_text("0" * 64)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(wrong))
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")


@pytest.mark.slow  # ~25-40 s on 2 cores: one head, three client round trips
def test_job_submit_cli_and_sdk_then_clean_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _hostile_env(monkeypatch, tmp_path)
    job_dir = _write_job_dir(tmp_path)

    with LocalRayHead(num_cpus=1) as head:
        assert re.fullmatch(r"127\.0\.0\.1:\d+", head.address)
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", head.dashboard_url)
        assert head.env["RAY_AUTH_MODE"] == "token" and head.env["RAY_AUTH_TOKEN"]
        assert "RAY_AUTH_TOKEN_PATH" not in head.child_env()

        # 1. the `ray job submit` CLI, as a user or `make` would run it
        proc = subprocess.run(
            [
                RAY,
                "job",
                "submit",
                "--address",
                head.dashboard_url,
                "--working-dir",
                str(job_dir),
                "--",
                "python",
                "hello.py",
            ],
            env=head.child_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out
        assert f"{MARKER} 1" in out, out
        assert "succeeded" in out, out

        # 2. the Python SDK (JobSubmissionClient with the token in its headers; Ray lets
        # RAY_API_SERVER_ADDRESS, then RAY_ADDRESS, override the address it is given)
        from ray.job_submission import JobSubmissionClient

        monkeypatch.setenv("RAY_API_SERVER_ADDRESS", head.dashboard_url)
        client = JobSubmissionClient(head.dashboard_url, headers={"Authorization": f"Bearer {head.token}"})
        job_id = client.submit_job(
            entrypoint="python hello.py", runtime_env={"working_dir": str(job_dir)}
        )
        deadline = time.monotonic() + 90
        while str(client.get_job_status(job_id)) not in ("SUCCEEDED", "FAILED", "STOPPED"):
            assert time.monotonic() < deadline, client.get_job_logs(job_id)
            time.sleep(0.5)
        logs = client.get_job_logs(job_id)
        assert str(client.get_job_status(job_id)) == "SUCCEEDED", logs
        assert f"{MARKER} 1" in logs

        # 3. without the token the job API refuses (auth really is on)
        unauth = subprocess.run(
            [RAY, "job", "list", "--address", head.dashboard_url],
            env={**head.child_env(), "RAY_AUTH_MODE": "disabled"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert unauth.returncode != 0 and "Unauthorized" in unauth.stdout + unauth.stderr

        pids = head.pids
        ports = dict(head.ports)
        temp_dir = head.temp_dir
        assert len(pids) >= 4  # ray start, gcs_server, raylet, dashboard...
        names = " ".join(psutil.Process(p).name() for p in pids if psutil.pid_exists(p))
        assert "gcs_server" in names and "raylet" in names

    assert head.alive_pids() == set()
    assert _leftovers(temp_dir) == []
    assert all(port_is_free(p) for p in ports.values()), ports
    assert not temp_dir.exists()
    head.stop()  # idempotent


def test_start_timeout_reports_log_and_cleans_up() -> None:
    """A head that is not up in time: clear error with the log tail, nothing left behind."""
    head = LocalRayHead(num_cpus=1, startup_timeout_s=3)
    with pytest.raises(LocalRayHeadError, match=r"did not come up within 3 s(.|\n)*ray-start.log"):
        head.start()
    temp_dir = head.temp_dir
    time.sleep(1)  # anything a half-started `ray start` spawned late would show up now
    assert head.alive_pids() == set()
    assert not temp_dir.exists()
    assert _leftovers(temp_dir) == []
