"""Keep the test session's processes off real-time scheduling.

On this project's 2-core CI machine, pytest's process has been switched to SCHED_FIFO 99 partway
through the session by something outside this repository, and every Ray process started after
that inherits it (docs/RELIABILITY.md). Two real-time threads that spin (gloo in DDP backward, a
busy dashboard agent) then starve everything else on 2 cores and the run livelocks. A daemon
thread puts every SCHED_FIFO/RR thread of pytest's process tree back to SCHED_OTHER once a
second; where nothing sets a real-time policy it finds nothing to do.
"""

from __future__ import annotations

import os
import threading

import psutil


def reset_real_time_threads(pid: int) -> int:
    """Put a process tree's SCHED_FIFO/RR threads back to SCHED_OTHER; return how many there were."""
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    found = 0
    for proc in procs:
        try:
            threads = proc.threads()
        except psutil.Error:
            continue
        for thread in threads:
            try:
                if os.sched_getscheduler(thread.id) in (os.SCHED_FIFO, os.SCHED_RR):
                    os.sched_setscheduler(thread.id, os.SCHED_OTHER, os.sched_param(0))
                    found += 1
            except OSError:  # the thread ended, or no permission
                continue
    return found


class RealTimeGuard:
    def __init__(self, every_s: float = 1.0):
        self.every_s = every_s
        self.reset = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="real-time-guard", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.reset += reset_real_time_threads(os.getpid())
            except Exception:  # never let the guard break the session
                continue

    def start(self) -> "RealTimeGuard":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
