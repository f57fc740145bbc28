"""SIGTERM (what a Cloud TPU VM, Slurm or Kubernetes sends before reclaiming the machine) and
Ctrl-C as requests to stop after the current step: the loop checks ``requested``, saves a
checkpoint and exits with 128 + the signal (143, 130); rerunning the same command resumes.
A second Ctrl-C stops at once (``KeyboardInterrupt``), losing the step in progress only.

Several processes must stop after the same step (a checkpoint is a collective write). JAX's
distributed runtime takes SIGTERM for itself there (its pre-emption notifier replaces this
handler) and agrees on a step through the coordination service; ``agreed(step)``, called by
every process at every step, combines that sync point with this guard's own flag (Ctrl-C, or a
SIGTERM the runtime did not take), gathered from all processes."""

from __future__ import annotations

import signal
import sys
import threading

import jax
import numpy as np

EXIT_CODE = 128 + signal.SIGTERM   # what a shell reports for a run ended by SIGTERM
INTERRUPT_EXIT_CODE = 128 + signal.SIGINT
NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "Ctrl-C"}


class PreemptionGuard:
    def __init__(self):
        self.requested = False
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGTERM)

    @property
    def name(self) -> str:
        return NAMES.get(self.signum, "SIGTERM")

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt   # the second Ctrl-C: stop now
        self.requested, self.signum = True, self.signum or signum
        if signum == signal.SIGINT:
            print("\nCtrl-C: stopping after the current step and its checkpoint (Ctrl-C again to stop now)",
                  file=sys.stderr, flush=True)

    def agreed(self, step: int) -> bool:
        """Whether every process stops after ``step``; the same answer on all of them. A
        collective with several processes: each must call it at every step from the same start."""
        if jax.process_count() == 1:
            return self.requested
        from jax.experimental import multihost_utils
        try:
            notice = multihost_utils.reached_preemption_sync_point(step)
        except RuntimeError:   # the runtime's pre-emption service is off: the flags alone
            notice = False
        flags = multihost_utils.process_allgather(np.int32(self.requested))
        return bool(notice or np.any(flags))

    def __enter__(self) -> "PreemptionGuard":
        # Signal handlers can only be installed from the main thread; elsewhere (a library
        # caller's worker thread) the run simply keeps the default behaviour.
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
