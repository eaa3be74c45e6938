"""CPU thread policy: how many loader workers and intra-op threads a run uses, from the cores actually free.

PyTorch's CPU kernels run on an OpenMP team of ``torch.get_num_threads()`` threads (default: every core),
whose threads busy-wait between parallel regions. On a machine where other work holds some of the cores,
such a team waits on descheduled members at every barrier: on a loaded 2-core machine training ran 1.6x
slower and ``bench`` 70x slower than with one thread. So a run plans its threads once
(:func:`plan_threads`): the cores this process may use (CPU affinity and a cgroup CPU quota), minus the
1-minute load average of the machine, shared between the DataLoader worker processes and the main
process's intra-op threads. :func:`openmp_env_defaults` (called by the CLI before PyTorch is imported)
also makes idle OpenMP threads sleep instead of spin (``OMP_WAIT_POLICY=PASSIVE``) unless the user chose a
policy. An ``OMP_NUM_THREADS`` set by the user is always kept.

Only the standard library at import: the CLI imports this module before ``torch``.
"""

from __future__ import annotations

import math
import os
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path

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
    workers: int  # DataLoader worker processes (0 = load in the main process)
    intra_op: int  # torch.set_num_threads of the main process
    source: str  # where intra_op comes from: "plan" or "OMP_NUM_THREADS"

    def describe(self) -> str:
        """One line for the training log."""
        how = "from OMP_NUM_THREADS" if self.source == "OMP_NUM_THREADS" else f"{self.cores} cores, load {self.load:.1f}"
        return f"threads: {self.intra_op} intra-op, {self.workers} loader worker{'s' * (self.workers != 1)} ({how})"


def plan_threads(workers: int, device_type: str, cores: int | None = None, load: float | None = None,
                 processes: int = 1, environ: MutableMapping[str, str] | None = None) -> ThreadPlan:
    """Loader workers and intra-op threads for a run on ``device_type`` (``cpu`` / ``cuda``).

    Args:
        workers: ``data.workers``; ``-1`` (AUTO) chooses: on the CPU, where the model's compute needs the
            cores, one worker per 4 free cores (none below 4: loading cached images takes a few percent of
            a step); on a GPU, one per free core but one, at most 8. Any other value is kept.
        cores, load: the machine (default: :func:`usable_cores`, :func:`machine_load`).
        processes: training processes sharing this machine (DDP's local world size); each gets its share.
        environ: where ``OMP_NUM_THREADS`` is looked up (default ``os.environ``); when set, it fixes ``intra_op``.
    Returns:
        the plan; ``intra_op`` = free cores minus the workers, at least 1.
    """
    if workers < AUTO:
        raise ValueError(f"data.workers must be >= 0, or -1 for automatic; got {workers}")
    cores = usable_cores() if cores is None else cores
    load = machine_load() if load is None else load
    free = max(1, free_cores(cores, load) // max(1, processes))
    if workers == AUTO:
        workers = free // CPU_CORES_PER_WORKER if device_type == "cpu" else min(MAX_GPU_WORKERS, max(1, free - 1))
    env = os.environ if environ is None else environ
    user = _positive_int(env.get("OMP_NUM_THREADS"))
    if user is not None:
        return ThreadPlan(cores, load, workers, user, "OMP_NUM_THREADS")
    return ThreadPlan(cores, load, workers, max(1, free - workers), "plan")


def apply_plan(plan: ThreadPlan) -> None:
    """Set this process's PyTorch intra-op threads to ``plan.intra_op``."""
    import torch

    if torch.get_num_threads() != plan.intra_op:
        torch.set_num_threads(plan.intra_op)


def openmp_env_defaults(environ: MutableMapping[str, str] | None = None) -> None:
    """Before PyTorch is imported: idle OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE``) unless the user set a policy.

    Spinning threads burn the cores other processes (and our own loader workers) need; on a loaded
    2-core machine that made training 1.6x slower. Has no effect once the OpenMP runtime is loaded.
    """
    env = os.environ if environ is None else environ
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _positive_int(value: str | None) -> int | None:
    try:
        n = int(value) if value is not None else 0
    except ValueError:
        return None
    return n if n > 0 else None
