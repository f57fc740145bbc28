"""Hardware a run config is planned for: devices, hosts and memory per device.
``benchmarks/memory_plan.py`` checks each paper config against its ``target``."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    devices: int            # JAX devices (a TPU v4 / v5p chip is one device: megacore)
    hosts: int
    memory_gib: float       # HBM per device
    note: str = ""


TARGETS = {t.name: t for t in (
    Target("v5p-16", 8, 2, 95.0, "Cloud TPU v5p: 8 chips (16 TensorCores) on 2 VMs"),
    Target("v4-32", 16, 4, 32.0, "Cloud TPU v4: 16 chips (32 TensorCores) on 4 VMs"),
    Target("v5e-8", 8, 1, 16.0, "Cloud TPU v5e: 8 chips on 1 VM"),
    Target("8xH100-80GB", 8, 1, 80.0, "one host with 8 NVIDIA H100 80GB"),
)}
