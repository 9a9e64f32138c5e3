"""A private, throw-away local Ray head that a script or a test starts and stops itself.

:class:`LocalRayHead` runs ``ray start --head --block`` as a child process on free ports,
with its own ``--temp-dir`` and its own authentication token, waits until the dashboard's
job API answers, and on :meth:`LocalRayHead.stop` tears down every process of *that*
cluster (and nothing else: other Ray clusters on the same machine are left alone; it never
runs ``ray stop``).

Authentication (see ``docs/RAY_AUTH.md``): Ray 2.60 enables token auth on a fresh
``ray.init()`` cluster, writes ``~/.ray/auth_token`` and exports ``RAY_AUTH_MODE=token`` in
that process; a later ``ray start --head`` with ``RAY_AUTH_MODE`` unset then turns token
auth on by itself as soon as that file exists, while a client with ``RAY_AUTH_MODE`` unset
sends no token (``ray job submit`` -> 401). So the head never relies on ambient state: it
is started with ``RAY_AUTH_MODE=token`` and a freshly generated ``RAY_AUTH_TOKEN``, and
:attr:`LocalRayHead.env` hands exactly those variables to every child process.

Use::

    with LocalRayHead(num_cpus=2) as head:
        subprocess.run(["ray", "job", "submit", "--", "python", "x.py"], env=head.child_env())
        client = head.job_client()           # a JobSubmissionClient that sends the token

or from a shell (what ``make demo`` does)::

    python -m common.raylocal --run -- python jobs/preprocess.py --config ...
"""

from __future__ import annotations

import argparse
import json
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
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Mapping, Sequence

import psutil

if TYPE_CHECKING:  # pragma: no cover - import only for type checkers
    from ray.job_submission import JobSubmissionClient

AuthMode = Literal["token", "disabled"]

#: Ray's authentication variables. Children get RAY_AUTH_MODE (+ RAY_AUTH_TOKEN in token
#: mode); an inherited RAY_AUTH_TOKEN_PATH is removed (RAY_AUTH_TOKEN wins anyway) so no
#: process ever sees two different tokens.
_AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")

#: Variables that point a process at some *other* Ray cluster; never inherited by the head.
_CLUSTER_VARS = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")


class LocalRayHeadError(RuntimeError):
    """The local Ray head failed to start (message includes the tail of its log)."""


def _ray_executable() -> str:
    """The ``ray`` CLI installed next to the running interpreter."""
    candidate = Path(sys.executable).parent / "ray"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("ray")
    if found is None:
        raise LocalRayHeadError(
            f"no `ray` executable next to {sys.executable} or on PATH; install ray[default]"
        )
    return found


def _free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that are free right now (on all interfaces)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_is_free(port: int) -> bool:
    """True if nothing listens on ``port`` (a new server could bind it right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"<no log at {path}>"
    return "\n".join(text.splitlines()[-lines:])


class LocalRayHead:
    """A single-node Ray cluster on free ports, owned by this Python process.

    Args:
        num_cpus: ``--num-cpus`` (default ``os.cpu_count()``).
        num_gpus: ``--num-gpus`` (default 0).
        auth_mode: ``"token"`` (default: a fresh random token, passed by env) or
            ``"disabled"``. Either way ``RAY_AUTH_MODE`` is set explicitly for the head and
            in :attr:`env`, so ambient settings (``~/.ray/auth_token``, an inherited
            ``RAY_AUTH_MODE``) cannot make head and clients disagree.
        startup_timeout_s: how long to wait for the job API to answer.
        stop_timeout_s: how long :meth:`stop` waits for a graceful exit before SIGKILL.
        temp_root: where the short ``lp-ray-*`` temp dir is made (Ray's unix sockets
            live under it and have a ~107 character path limit); default ``/tmp`` when
            it exists, else :func:`tempfile.gettempdir`.
        extra_env: extra variables for the head (and so for jobs' drivers and workers).
        keep_temp_dir: keep the temp dir (Ray's logs) after :meth:`stop`, for debugging.
    """

    def __init__(
        self,
        num_cpus: int | None = None,
        num_gpus: int = 0,
        *,
        auth_mode: AuthMode = "token",
        startup_timeout_s: float = 90.0,
        stop_timeout_s: float = 30.0,
        temp_root: str | os.PathLike[str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        keep_temp_dir: bool = False,
    ) -> None:
        if auth_mode not in ("token", "disabled"):
            raise ValueError(f"auth_mode must be 'token' or 'disabled', got {auth_mode!r}")
        self.num_cpus: int = num_cpus if num_cpus is not None else (os.cpu_count() or 1)
        self.num_gpus: int = num_gpus
        self.auth_mode: AuthMode = auth_mode
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        if temp_root is None:
            temp_root = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
        self._temp_root = str(temp_root)
        self._extra_env = dict(extra_env or {})
        self.keep_temp_dir = keep_temp_dir

        self._token: str | None = secrets.token_hex(32) if auth_mode == "token" else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._temp_dir: Path | None = None
        self._gcs_port = self._dashboard_port = self._client_port = self._agent_port = 0
        #: every process of this cluster seen so far (head, gcs_server, raylet, workers...)
        self._seen: dict[int, psutil.Process] = {}
        self._saved_environ: dict[str, str | None] | None = None

    # ----------------------------------------------------------------- properties
    def _require_started(self) -> None:
        if self._proc is None:
            raise RuntimeError("LocalRayHead is not running; call start() or use `with`")

    @property
    def address(self) -> str:
        """GCS address for ``ray.init(address=...)``: ``"127.0.0.1:PORT"``."""
        self._require_started()
        return f"127.0.0.1:{self._gcs_port}"

    @property
    def dashboard_url(self) -> str:
        """Dashboard / job API URL: ``"http://127.0.0.1:PORT"``."""
        self._require_started()
        return f"http://127.0.0.1:{self._dashboard_port}"

    @property
    def ports(self) -> dict[str, int]:
        """The ports this head was started with (gcs, dashboard, client, dashboard_agent)."""
        return {
            "gcs": self._gcs_port,
            "dashboard": self._dashboard_port,
            "client": self._client_port,
            "dashboard_agent": self._agent_port,
        }

    @property
    def temp_dir(self) -> Path:
        """The cluster's ``--temp-dir`` (removed by :meth:`stop`)."""
        if self._temp_dir is None:
            raise RuntimeError("LocalRayHead has not been started")
        return self._temp_dir

    @property
    def log_path(self) -> Path:
        """stdout/stderr of ``ray start`` (inside :attr:`temp_dir`)."""
        return self.temp_dir / "ray-start.log"

    @property
    def pid(self) -> int:
        """PID of the ``ray start --block`` process."""
        self._require_started()
        assert self._proc is not None
        return self._proc.pid

    @property
    def pids(self) -> set[int]:
        """PIDs of every process of this cluster seen so far (refreshed on access)."""
        if self._proc is not None:
            self._collect_processes()
        return set(self._seen)

    @property
    def auth_token(self) -> str | None:
        """The cluster's token (``None`` when ``auth_mode="disabled"``)."""
        return self._token

    @property
    def auth_headers(self) -> dict[str, str]:
        """HTTP headers for the dashboard API (empty when auth is disabled)."""
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    @property
    def env(self) -> dict[str, str]:
        """Variables a child process needs to use this cluster.

        ``RAY_ADDRESS`` (GCS, for ``ray.init()``), ``RAY_API_SERVER_ADDRESS`` (dashboard,
        for ``ray job ...`` without ``--address``), ``RAY_AUTH_MODE`` and, in token mode,
        ``RAY_AUTH_TOKEN``. Prefer :meth:`child_env`, which also drops an inherited
        ``RAY_AUTH_TOKEN_PATH``/``RAY_AUTH_TOKEN`` that would otherwise conflict.
        """
        env = {
            "RAY_ADDRESS": self.address,
            "RAY_API_SERVER_ADDRESS": self.dashboard_url,
            "RAY_AUTH_MODE": self.auth_mode,
        }
        if self._token:
            env["RAY_AUTH_TOKEN"] = self._token
        return env

    def child_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """A full environment for a child process: ``base`` (default ``os.environ``)
        without stale Ray auth/address variables, plus :attr:`env`, with this
        interpreter's bin dir first on ``PATH`` (so ``ray`` and ``python`` are this venv's)."""
        env = {
            k: v for k, v in (os.environ if base is None else base).items() if k not in _AUTH_VARS
        }
        env.update(self.env)
        env["PATH"] = _path_with_interpreter_dir(env.get("PATH", ""))
        return env

    # ----------------------------------------------------------------- lifecycle
    def __enter__(self) -> "LocalRayHead":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, attempts: int = 3) -> "LocalRayHead":
        """Start the head and wait for the job API; retried on a port race."""
        if self._proc is not None:
            raise RuntimeError("LocalRayHead already started")
        last: LocalRayHeadError | None = None
        for _ in range(attempts):
            try:
                self._start_once()
                return self
            except _PortRace as err:  # someone grabbed a port between probe and bind
                last = LocalRayHeadError(str(err))
                continue
        assert last is not None
        raise last

    def _head_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in _AUTH_VARS and k not in _CLUSTER_VARS
        }
        env.update(self._extra_env)
        env["RAY_AUTH_MODE"] = self.auth_mode
        if self._token:
            env["RAY_AUTH_TOKEN"] = self._token
        # A job's entrypoint (`python x.py`) is run by a shell with the head's PATH:
        # make `python` this interpreter, not whatever comes first on the system.
        env["PATH"] = _path_with_interpreter_dir(env.get("PATH", ""))
        # SIGTERM makes `ray start --block` drain the node via the GCS for up to 30 s
        # first; a throw-away local head has nothing to drain.
        env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")
        env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        return env

    def _start_once(self) -> None:
        self._temp_dir = Path(tempfile.mkdtemp(prefix="lp-ray-", dir=self._temp_root))
        (
            self._gcs_port,
            self._dashboard_port,
            self._client_port,
            self._agent_port,
        ) = _free_ports(4)
        cmd = [
            _ray_executable(),
            "start",
            "--head",
            "--block",
            f"--port={self._gcs_port}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self._dashboard_port}",
            f"--ray-client-server-port={self._client_port}",
            # default 52365 is fixed: it would clash with any other Ray on this machine
            f"--dashboard-agent-listen-port={self._agent_port}",
            f"--num-cpus={self.num_cpus}",
            f"--num-gpus={self.num_gpus}",
            f"--temp-dir={self._temp_dir}",
            "--disable-usage-stats",
        ]
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child owns it until stop()
        try:
            self._proc = subprocess.Popen(
                cmd,
                env=self._head_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() can signal it alone
            )
        finally:
            log.close()
        self._seen = {self._proc.pid: psutil.Process(self._proc.pid)}
        try:
            self._wait_ready()
        except BaseException:
            log_tail = _tail(self.log_path)
            port_race = "already in use" in log_tail or "Address already" in log_tail
            # a half-started `ray start` may not act on SIGTERM yet: do not wait long
            self.stop(timeout_s=5.0, _keep_temp_dir=False if port_race else None)
            if port_race:
                raise _PortRace(log_tail) from None
            raise

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout_s
        url = f"{self.dashboard_url}/api/version"
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise LocalRayHeadError(
                    f"`ray start --head` exited with code {code} before the job API at "
                    f"{url} answered.\n--- tail of {self.log_path} ---\n{_tail(self.log_path)}"
                )
            started = "Ray runtime started" in _tail(self.log_path, 200)
            try:
                req = urllib.request.Request(url, headers=self.auth_headers)
                with urllib.request.urlopen(req, timeout=2) as resp:
                    body = json.loads(resp.read() or b"{}")
                if started and "ray_version" in body:
                    self._collect_processes()
                    return
            except (urllib.error.URLError, OSError, ValueError) as err:
                last_error = repr(err)
            time.sleep(0.5)
        raise LocalRayHeadError(
            f"Ray head did not come up within {self.startup_timeout_s:.0f} s "
            f"(GET {url}: {last_error}).\n--- tail of {self.log_path} ---\n"
            f"{_tail(self.log_path)}{self._dashboard_log_tail()}"
        )

    def _dashboard_log_tail(self) -> str:
        if self._temp_dir is None:
            return ""
        logs = sorted(self._temp_dir.glob("session_*/logs/dashboard.log"))
        return f"\n--- tail of {logs[-1]} ---\n{_tail(logs[-1], 20)}" if logs else ""

    def _collect_processes(self) -> None:
        """Remember every live process of this cluster: descendants of the head, and any
        process whose command line names our temp dir (workers reparented to init)."""
        if self._proc is None:
            return
        try:
            head = psutil.Process(self._proc.pid)
            for p in [head, *head.children(recursive=True)]:
                self._seen.setdefault(p.pid, p)
        except psutil.NoSuchProcess:
            pass
        if self._temp_dir is not None:
            for p in _processes_mentioning(str(self._temp_dir)):
                self._seen.setdefault(p.pid, p)

    def stop(self, timeout_s: float | None = None, *, _keep_temp_dir: bool | None = None) -> None:
        """Stop the head and every process of this cluster; remove the temp dir.

        SIGTERM goes to the ``ray start --block`` process group (gcs_server, raylet,
        dashboard...; workers and actors live in their own groups and exit with their
        raylet). Whatever of this cluster is still alive after ``timeout_s`` (default
        ``stop_timeout_s``) is SIGKILLed by PID. Idempotent.
        """
        grace = self.stop_timeout_s if timeout_s is None else timeout_s
        proc = self._proc
        if proc is None:
            return
        self._deactivate()
        self._collect_processes()
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        self._collect_processes()  # orphans found through the temp dir
        self._proc = None
        others = [p for pid, p in self._seen.items() if pid != proc.pid]
        _, alive = psutil.wait_procs(others, timeout=grace)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=10)
        if self._temp_dir is not None:
            for p in _processes_mentioning(str(self._temp_dir)):  # last sweep, by PID
                try:
                    p.kill()
                    p.wait(timeout=10)
                except (psutil.NoSuchProcess, psutil.TimeoutExpired):
                    pass
            keep = self.keep_temp_dir if _keep_temp_dir is None else _keep_temp_dir
            if not keep:
                shutil.rmtree(self._temp_dir, ignore_errors=True)

    def alive_pids(self) -> set[int]:
        """PIDs among :attr:`pids` that are still running (should be empty after stop)."""
        out = set()
        for pid, p in self._seen.items():
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    out.add(pid)
            except psutil.NoSuchProcess:
                pass
        return out

    # ----------------------------------------------------------------- clients
    def activate(self) -> None:
        """Point *this* process at the head, for an in-process ``ray.init()``.

        Sets :attr:`env` in ``os.environ`` (dropping ``RAY_AUTH_TOKEN_PATH``) and refreshes
        Ray's cached auth config and token; Ray reads ``RAY_AUTH_MODE`` once at import, so
        merely setting the variables after ``import ray`` is not enough. :meth:`stop`
        restores the previous values. Child processes should use :meth:`child_env` instead.
        """
        self._require_started()
        if self._saved_environ is None:
            self._saved_environ = {k: os.environ.get(k) for k in (*_AUTH_VARS, *_CLUSTER_VARS)}
        os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
        os.environ.pop("RAY_AUTH_TOKEN", None)
        os.environ.update(self.env)
        _refresh_ray_auth_cache()

    def _deactivate(self) -> None:
        if self._saved_environ is None:
            return
        ray_mod = sys.modules.get("ray")
        if ray_mod is not None and ray_mod.is_initialized():
            ray_mod.shutdown()  # drop this process's connection before the cluster goes
        for key, value in self._saved_environ.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_environ = None
        _refresh_ray_auth_cache()

    def job_client(self) -> "JobSubmissionClient":
        """A :class:`ray.job_submission.JobSubmissionClient` for this head that sends the
        token itself (works whatever ``RAY_AUTH_MODE``/``RAY_ADDRESS`` this process has)."""
        from ray.job_submission import JobSubmissionClient

        # Ray lets RAY_API_SERVER_ADDRESS, then RAY_ADDRESS, override the `address`
        # argument; pin them to this head while the client resolves its URL.
        saved = {k: os.environ.get(k) for k in _CLUSTER_VARS}
        os.environ["RAY_API_SERVER_ADDRESS"] = self.dashboard_url
        os.environ.pop("RAY_ADDRESS", None)
        try:
            return JobSubmissionClient(self.dashboard_url, headers=self.auth_headers)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the ``ray start`` output."""
        return _tail(self.log_path, lines)


class _PortRace(LocalRayHeadError):
    """A chosen port was taken before Ray bound it; start() retries with new ports."""


def _refresh_ray_auth_cache() -> None:
    """Make this process's Ray re-read RAY_AUTH_MODE / the token (as Ray's own tests do:
    config first, then the token cache)."""
    if "ray" not in sys.modules:
        return  # read fresh on first import
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def _path_with_interpreter_dir(path: str) -> str:
    bindir = str(Path(sys.executable).parent)
    parts = [p for p in path.split(os.pathsep) if p and p != bindir]
    return os.pathsep.join([bindir, *parts])


def _processes_mentioning(needle: str) -> list[psutil.Process]:
    """Processes whose command line contains ``needle`` (our unique temp dir)."""
    me = os.getpid()
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.pid != me and any(needle in arg for arg in (p.info["cmdline"] or [])):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


# --------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m common.raylocal [--run] [options] -- CMD ...``"""
    parser = argparse.ArgumentParser(
        prog="python -m common.raylocal",
        description="Start a private local Ray head, run CMD against it, stop the head. "
        "Without --run: start a head, print its env and wait for Ctrl-C.",
    )
    parser.add_argument("--run", action="store_true", help="run the command after `--`")
    parser.add_argument("--num-cpus", type=int, default=None, help="default: os.cpu_count()")
    parser.add_argument("--num-gpus", type=int, default=0)
    parser.add_argument("--auth-mode", choices=("token", "disabled"), default="token")
    parser.add_argument("--startup-timeout", type=float, default=90.0, help="seconds")
    parser.add_argument("--keep-temp-dir", action="store_true", help="keep Ray's logs")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    args = parser.parse_args(argv)
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if args.run and not cmd:
        parser.error("--run needs a command after `--`")
    if cmd and not args.run:
        parser.error("a command was given without --run")

    def _on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_sigterm)
    head = LocalRayHead(
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        auth_mode=args.auth_mode,
        startup_timeout_s=args.startup_timeout,
        keep_temp_dir=args.keep_temp_dir,
    )
    try:
        head.start()
    except LocalRayHeadError as err:
        print(f"raylocal: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # start() has already cleaned up
        return 130
    child: subprocess.Popen[bytes] | None = None
    try:
        print(
            f"raylocal: Ray head up at {head.address}, dashboard {head.dashboard_url} "
            f"(temp dir {head.temp_dir})",
            file=sys.stderr,
            flush=True,
        )
        if not args.run:
            for key, value in head.env.items():
                print(f"export {key}={value}")
            sys.stdout.flush()
            print("raylocal: Ctrl-C to stop", file=sys.stderr, flush=True)
            while True:
                time.sleep(3600)
        child = subprocess.Popen(cmd, env=head.child_env())
        code = child.wait()
        return code if code >= 0 else 128 - code
    except KeyboardInterrupt:
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        return 130
    finally:
        head.stop()


if __name__ == "__main__":
    sys.exit(main())
