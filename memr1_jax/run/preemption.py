"""SIGTERM as a request to stop after the current step (what a Cloud TPU VM, Slurm or
Kubernetes sends before reclaiming the machine): the loop checks ``requested``, saves a
checkpoint and exits; rerunning the same command resumes from it."""

from __future__ import annotations

import signal
import threading

EXIT_CODE = 128 + signal.SIGTERM   # what a shell reports for a run ended by SIGTERM


class PreemptionGuard:
    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        self.requested = True

    def __enter__(self) -> "PreemptionGuard":
        # Signal handlers can only be installed from the main thread; elsewhere (a library
        # caller's worker thread) the run simply keeps the default behaviour.
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
