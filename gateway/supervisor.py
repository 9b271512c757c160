"""The supervisor of a multi-worker gateway, and how a worker reaches it.

SIGHUP to the supervisor reloads the policy and classifier inside every worker (as SIGHUP does in a single-worker
gateway) instead of uvicorn's default of replacing the workers: no model reload, no capacity dip, and a worker
keeps its old policy when the new one is invalid. `POST /admin/reload` on any worker uses it to reach the others.
"""

from __future__ import annotations

import logging
import os
import signal

from uvicorn.supervisors import Multiprocess

SUPERVISOR_ENV = "SLM_GATEWAY_SUPERVISOR_PID"
log = logging.getLogger("uvicorn.error")  # configured by uvicorn in the supervisor process


class ReloadingSupervisor(Multiprocess):
    """uvicorn's worker supervisor, with SIGHUP passed on to the workers (each reloads in place)."""

    def handle_hup(self) -> None:
        pids = [process.pid for process in self.processes if process.pid is not None]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:  # a worker that just died: keep_subprocess_alive replaces it
                pass
        log.info("SIGHUP: asked %d workers to reload the policy and classifier", len(pids))


def reload_pid() -> int:
    """The process whose SIGHUP reloads every worker: the supervisor of a multi-worker gateway, else this one."""
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if supervisor and int(supervisor) == os.getppid():
        return int(supervisor)
    return os.getpid()


def ask_supervisor_to_reload() -> bool:
    """From a worker of a multi-worker gateway: have every worker reload (False when there is no supervisor)."""
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if not supervisor or int(supervisor) != os.getppid():
        return False
    os.kill(int(supervisor), signal.SIGHUP)
    return True
