"""Child processes of the demo: started in their own session, logged to the work dir."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

STOP_GRACE_S = 8.0  # a master's shutdown handover may take up to 3 s, then the hub flushes
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """Runs in the child before exec: if the demo dies hard, its children get SIGTERM."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ManagedProcess:
    """A child process of the demo with its log file in the work dir; restartable."""

    def __init__(self, name: str, argv: list[str], workdir: Path) -> None:
        self.name = name
        self.argv = argv
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.running and self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        with self.log_path.open("ab") as out:
            # Own session: a Ctrl-C in the terminal reaches the demo only, and the demo stops
            # its children in an order that keeps the pair consistent.
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        log.info("started %s (pid %s)", self.name, self.proc.pid)

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.running:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = STOP_GRACE_S) -> None:
        """SIGTERM, then SIGKILL if it does not leave in time; always reaps the process."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing it", self.name, timeout)
                proc.kill()
                proc.wait(5)
        else:
            proc.wait()

    def log_tail(self, chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""
