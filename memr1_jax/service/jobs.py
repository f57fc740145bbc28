"""Background adds: a worker thread that runs the jobs queued in the store.

A job is applied exactly once: its changes and its "done" are one transaction
(``SQLStore.finish_job``), so a job whose worker died (kill -9, a lost server) runs again and
lands once; a scope's jobs run in the order they were queued (``SQLStore.claim_job``). Every
process with a ``Memory`` on the store may work the queue (several servers on one PostgreSQL
database share it).
"""

from __future__ import annotations

import logging
import threading
import uuid

log = logging.getLogger(__name__)


class JobWorker:
    def __init__(self, store, run, lease_s: float, poll_s: float = 0.5):
        """``run(job_id, request)`` plans a job's changes and finishes it; ``lease_s``: how long
        a job may run before another worker takes it over."""
        self.store, self.run, self.lease_s, self.poll_s = store, run, lease_s, poll_s
        self.id = f"worker-{uuid.uuid4().hex[:12]}"
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._loop, name="memr1-jobs", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                claimed = self.store.claim_job(self.id, self.lease_s)
            except Exception:   # the store closed under us, or a transient error: try again later
                log.exception("job queue: claim failed")
                claimed = None
            if claimed is None:
                self._wake.wait(self.poll_s)
                self._wake.clear()
                continue
            job_id, request = claimed
            try:
                self.run(job_id, request)
            except Exception as e:   # the add's own error (a model, a bad message): the job fails, named
                log.exception("job %s failed", job_id)
                try:
                    self.store.finish_job(job_id, [], error=f"{type(e).__name__}: {e}")
                except Exception:
                    log.exception("job %s: could not record its failure", job_id)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=60)
