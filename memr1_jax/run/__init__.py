"""A run's folder and its side jobs: logs and resume truncation (``records``), hooks on the
step loop (``hooks``), SIGTERM handling (``preemption``), the run's mesh and models (``models``)."""
