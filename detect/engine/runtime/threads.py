"""CPU thread policy: how many loader workers and intra-op threads a run uses, from the cores it may use.

PyTorch's CPU kernels run on an OpenMP team of ``torch.get_num_threads()`` threads (default: every core).
By default idle team threads spin, so on a machine where other work holds a core the team waits on a
descheduled member at every barrier. Measured on a 2-core VM, one SSD training step (224 px, batch 16):

=====================  ==============  =====================
threads                idle machine    one core busy elsewhere
=====================  ==============  =====================
2, spinning (default)  1.37-1.48 s     4.28-4.68 s
2, sleeping (PASSIVE)  1.41-1.52 s     2.53-3.08 s
1                      2.22-2.43 s     2.59-2.71 s
=====================  ==============  =====================

So the CLI calls :func:`openmp_env_defaults` before PyTorch is imported: idle OpenMP threads sleep
(``OMP_WAIT_POLICY=PASSIVE``) unless the user chose a policy. With sleeping threads a run uses every core
it may (CPU affinity, cgroup quota) and the OS shares them as the load changes; with spinning threads (the
policy could not be set: PyTorch imported first, or the user asked for ACTIVE) it leaves out the cores the
machine's 1-minute load average says are busy. :func:`plan_threads` then shares those cores between the
DataLoader worker processes and the main process's intra-op threads. An ``OMP_NUM_THREADS`` set by the
user is always kept.

Only the standard library at import: the CLI imports this module before ``torch``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

from data_tools.errors import InvalidInput

AUTO = -1  # data.workers: choose from the machine
MAX_GPU_WORKERS = 8  # auto workers feeding a GPU
CPU_CORES_PER_WORKER = 4  # auto on the CPU: one loader worker per 4 free cores (0 below 4)


def usable_cores(cgroup_cpu_max: str | os.PathLike = "/sys/fs/cgroup/cpu.max") -> int:
    """CPUs this process may run on: its affinity set, capped by a cgroup v2 CPU quota (``cpu.max``)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path(cgroup_cpu_max).read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def machine_load() -> float:
    """The 1-minute load average (runnable threads of the whole machine); 0.0 where unknown."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def free_cores(cores: int, load: float) -> int:
    """Cores left to this run: ``cores`` minus the load rounded to whole cores, at least 1.

    A load of 0.4 leaves every core (short bursts, like this process starting up); 0.6 takes one.
    """
    return max(1, cores - int(load + 0.5))


@dataclass(frozen=True)
class ThreadPlan:
    """The threads of one run: ``workers`` loader processes and ``intra_op`` PyTorch threads in this process."""

    cores: int  # CPUs this process may use
    load: float  # machine load when planned
    passive: bool  # idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE); else they spin and the load counts
    workers: int  # DataLoader worker processes (0 = load in the main process)
    intra_op: int  # torch.set_num_threads of the main process
    source: str  # where intra_op comes from: "plan" or "OMP_NUM_THREADS"

    def describe(self) -> str:
        """One line for the training log."""
        if self.source == "OMP_NUM_THREADS":
            how = "from OMP_NUM_THREADS"
        elif self.passive:
            how = f"{self.cores} cores, idle threads sleep"
        else:
            how = f"{self.cores} cores, load {self.load:.1f}, idle threads spin"
        return f"threads: {self.intra_op} intra-op, {self.workers} loader worker{'s' * (self.workers != 1)} ({how})"


def plan_threads(workers: int, device_type: str, cores: int | None = None, load: float | None = None,
                 processes: int = 1, environ: Mapping[str, str] | None = None) -> ThreadPlan:
    """Loader workers and intra-op threads for a run on ``device_type`` (``cpu`` / ``cuda``).

    Args:
        workers: ``data.workers``; ``-1`` (AUTO) chooses from the free cores: on the CPU, where the model's
            compute needs them, one worker per 4 (none below 4: loading cached images takes a few percent
            of a step); on a GPU, all but one, at most 8. Any other value is kept.
        cores, load: the machine (default: :func:`usable_cores`, :func:`machine_load`).
        processes: training processes sharing this machine (DDP's local world size); each gets its share.
        environ: where ``OMP_WAIT_POLICY`` and ``OMP_NUM_THREADS`` are read (default ``os.environ``).
    Returns:
        the plan. Free cores: all ``cores`` when idle threads sleep, else ``cores`` minus the load
        (:func:`free_cores`); each process's share of them; ``intra_op`` = its share minus the workers, at
        least 1, unless ``OMP_NUM_THREADS`` fixes it.
    """
    if workers < AUTO:
        raise InvalidInput(f"data.workers must be >= 0, or -1 for automatic; got {workers}")
    env = os.environ if environ is None else environ
    cores = usable_cores() if cores is None else cores
    load = machine_load() if load is None else load
    passive = env.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE"
    free = max(1, (cores if passive else free_cores(cores, load)) // max(1, processes))
    if workers == AUTO:
        workers = free // CPU_CORES_PER_WORKER if device_type == "cpu" else min(MAX_GPU_WORKERS, max(1, free - 1))
    user = _positive_int(env.get("OMP_NUM_THREADS"))
    if user is not None:
        return ThreadPlan(cores, load, passive, workers, user, "OMP_NUM_THREADS")
    return ThreadPlan(cores, load, passive, workers, max(1, free - workers), "plan")


def apply_plan(plan: ThreadPlan) -> None:
    """Set this process's PyTorch intra-op threads to ``plan.intra_op``."""
    import torch

    if torch.get_num_threads() != plan.intra_op:
        torch.set_num_threads(plan.intra_op)


def openmp_env_defaults(environ: MutableMapping[str, str] | None = None) -> None:
    """Before PyTorch is imported: idle OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE``) unless the user set a policy.

    Spinning threads burn the cores other processes (and our own loader workers) need (module doc). Has
    no effect once the OpenMP runtime is loaded, so call it before anything imports ``torch``.
    """
    env = os.environ if environ is None else environ
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _positive_int(value: str | None) -> int | None:
    try:
        n = int(value) if value is not None else 0
    except ValueError:
        return None
    return n if n > 0 else None
