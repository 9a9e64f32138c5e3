"""A private local Ray head with a job API, for ``ray job submit`` (the demo, a benchmark, a test).

Without a job API, ``ray.init()`` starts a local cluster itself (tests/conftest.py) and
``ray.cluster_utils.Cluster`` simulates nodes. :class:`LocalRayHead` runs ``ray start --head
--block`` as one child, on free ports in its own temp dir, and stops it through that process
(``ray stop`` would stop every Ray process on the machine).

Authentication, the project's one choice (docs/RAY_AUTH.md): token auth on, set explicitly. The
head gets ``RAY_AUTH_MODE=token`` and a fresh ``RAY_AUTH_TOKEN``; :meth:`LocalRayHead.child_env`
gives both to every client, so neither ``~/.ray/auth_token`` nor an inherited mode matters::

    with LocalRayHead(num_cpus=2) as head:
        subprocess.run(["ray", "job", "submit", "--", "python", "x.py"], env=head.child_env())
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

#: variables that would point a client at another cluster or another token
_RAY_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")


class LocalRayHeadError(RuntimeError):
    """The head did not start; the message ends with the tail of its log."""


class LocalRayHead:
    """A one-node Ray cluster owned by this Python process (``with`` starts and stops it)."""

    def __init__(self, num_cpus: int | None = None, num_gpus: int = 0, *, startup_timeout_s: float = 90.0,
                 stop_timeout_s: float = 30.0):
        self.num_cpus, self.num_gpus = num_cpus or os.cpu_count() or 1, num_gpus
        self.startup_timeout_s, self.stop_timeout_s = startup_timeout_s, stop_timeout_s
        self.token = secrets.token_hex(32)
        self.ports: dict[str, int] = {}
        self.temp_dir: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._seen: dict[int, psutil.Process] = {}

    address = property(lambda self: f"127.0.0.1:{self.ports['gcs']}")
    dashboard_url = property(lambda self: f"http://127.0.0.1:{self.ports['dashboard']}")

    log_path = property(lambda self: Path(self.temp_dir or ".") / "ray-start.log")

    @property
    def env(self) -> dict[str, str]:
        """What a client needs: the addresses, the auth mode and the token."""
        return {"RAY_ADDRESS": self.address, "RAY_API_SERVER_ADDRESS": self.dashboard_url,
                "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    def child_env(self) -> dict[str, str]:
        """``os.environ`` without other clusters' Ray variables, plus :attr:`env`, with this
        interpreter's bin dir first on PATH (``ray`` and ``python`` are this venv's)."""
        env = {k: v for k, v in os.environ.items() if k not in _RAY_VARS}
        bindir = str(Path(sys.executable).parent)
        return {**env, **self.env, "PATH": os.pathsep.join([bindir, env.get("PATH", "")])}

    @property
    def pids(self) -> set[int]:
        """Every process of this cluster seen so far: the head and its descendants."""
        if self._proc is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                head = psutil.Process(self._proc.pid)
                for p in [head, *head.children(recursive=True)]:
                    self._seen.setdefault(p.pid, p)  # the first Process object: psutil then spots a reused PID
        return set(self._seen)

    def alive_pids(self) -> set[int]:
        return {pid for pid, p in self._seen.items() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE}

    def __enter__(self) -> LocalRayHead:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, attempts: int = 3) -> LocalRayHead:
        """Start ``ray start --head --block`` and wait for its job API (new ports on a port race)."""
        for attempt in range(attempts):
            root = "/tmp" if os.path.isdir("/tmp") else None  # Ray's socket paths must stay short
            self.temp_dir = Path(tempfile.mkdtemp(prefix="lp-ray-", dir=root))
            socks = [socket.create_server(("", 0)) for _ in range(4)]  # 4 distinct ports free right now
            self.ports = dict(zip(("gcs", "dashboard", "client", "dashboard_agent"), (s.getsockname()[1] for s in socks)))
            for sock in socks:
                sock.close()
            cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={self.ports['gcs']}",
                   "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.ports['dashboard']}",
                   f"--ray-client-server-port={self.ports['client']}",
                   f"--dashboard-agent-listen-port={self.ports['dashboard_agent']}",
                   f"--num-cpus={self.num_cpus}", f"--num-gpus={self.num_gpus}", f"--temp-dir={self.temp_dir}",
                   "--disable-usage-stats"]
            # a throw-away head has nothing to drain on SIGTERM (Ray waits 30 s by default)
            env = {k: v for k, v in self.child_env().items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
            env.update(RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0", RAY_USAGE_STATS_ENABLED="0")
            with open(self.log_path, "wb") as log:
                self._proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True)  # its own group: stop() signals it alone
            try:
                self._wait_ready()
                return self
            except BaseException as err:
                race = "already in use" in self.log_tail()
                self.stop(timeout_s=5.0)
                if not (race and isinstance(err, LocalRayHeadError)) or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def _wait_ready(self) -> None:
        deadline, url, last = time.monotonic() + self.startup_timeout_s, f"{self.dashboard_url}/api/version", "no answer"
        while time.monotonic() < deadline:
            self.pids  # noqa: B018  (remember the processes as they appear)
            if self._proc.poll() is not None:
                raise self._error(f"`ray start --head` exited with code {self._proc.returncode}.")
            try:
                request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"})
                with urllib.request.urlopen(request, timeout=2):
                    if "Ray runtime started" in self.log_tail(200):
                        return
            except (urllib.error.URLError, OSError) as err:
                last = repr(err)
            time.sleep(0.5)
        raise self._error(f"Ray head did not come up within {self.startup_timeout_s:.0f} s (GET {url}: {last}).")

    def stop(self, timeout_s: float | None = None) -> None:
        """SIGTERM to the head's process group (``ray start --block`` then stops gcs_server,
        raylet and dashboard, and the raylet its workers); SIGKILL by PID to whatever of this
        cluster is left after the grace time; the temp dir removed. Idempotent."""
        proc, grace = self._proc, self.stop_timeout_s if timeout_s is None else timeout_s
        if proc is None:
            return
        self.pids  # noqa: B018  (a last look at the tree before it goes)
        others = [p for pid, p in self._seen.items() if pid != proc.pid]
        self._proc = None
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        _, alive = psutil.wait_procs(others, timeout=grace)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):  # it may exit meanwhile
                p.kill()  # psutil checks the PID still is that process
        psutil.wait_procs(alive, timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def _error(self, what: str) -> LocalRayHeadError:
        return LocalRayHeadError(f"{what}\n--- tail of {self.log_path} ---\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return f"<no log at {self.log_path}>"

