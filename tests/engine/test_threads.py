"""Thread policy: loader workers and intra-op threads from the cores actually free."""

from __future__ import annotations

import pytest
import torch

from detect.config import config_from_dict
from detect.engine.runtime import threads
from detect.engine.runtime.device import Dist
from detect.engine.runtime.threads import (
    ThreadPlan,
    apply_plan,
    free_cores,
    openmp_env_defaults,
    plan_threads,
    usable_cores,
)
from detect.engine.training.prepare import build_datasets


@pytest.fixture
def keep_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_free_cores_subtract_the_machine_load():
    assert free_cores(2, 0.0) == 2
    assert free_cores(2, 0.4) == 2  # a short burst (this process starting) takes no core
    assert free_cores(2, 1.1) == 1  # one core held by other work
    assert free_cores(2, 5.0) == 1  # never below one
    assert free_cores(16, 3.6) == 12


def test_auto_workers_on_cpu_leave_the_cores_to_the_model():
    assert plan_threads(-1, "cpu", cores=2, load=0.0, environ={}) == ThreadPlan(2, 0.0, False, 0, 2, "plan")
    assert plan_threads(-1, "cpu", cores=2, load=1.2, environ={}) == ThreadPlan(2, 1.2, False, 0, 1, "plan")
    assert plan_threads(-1, "cpu", cores=8, load=0.0, environ={}).workers == 2
    p = plan_threads(-1, "cpu", cores=16, load=0.0, environ={})
    assert (p.workers, p.intra_op) == (4, 12)


def test_auto_workers_feeding_a_gpu():
    p = plan_threads(-1, "cuda", cores=16, load=0.0, environ={})
    assert (p.workers, p.intra_op) == (8, 8)
    p = plan_threads(-1, "cuda", cores=4, load=1.0, environ={})
    assert (p.workers, p.intra_op) == (2, 1)
    assert plan_threads(-1, "cuda", cores=1, load=0.0, environ={}).workers == 1


def test_sleeping_threads_use_every_core_whatever_the_load():
    p = plan_threads(-1, "cpu", cores=2, load=3.0, environ={"OMP_WAIT_POLICY": "passive"})
    assert (p.passive, p.workers, p.intra_op) == (True, 0, 2)
    assert p.describe() == "threads: 2 intra-op, 0 loader workers (2 cores, idle threads sleep)"
    p = plan_threads(-1, "cpu", cores=2, load=3.0, environ={"OMP_WAIT_POLICY": "ACTIVE"})
    assert (p.passive, p.intra_op) == (False, 1)
    assert p.describe() == "threads: 1 intra-op, 0 loader workers (2 cores, load 3.0, idle threads spin)"


def test_explicit_workers_are_kept_and_take_their_cores():
    p = plan_threads(4, "cpu", cores=2, load=0.0, environ={})
    assert (p.workers, p.intra_op) == (4, 1)
    p = plan_threads(0, "cpu", cores=8, load=2.0, environ={})
    assert (p.workers, p.intra_op) == (0, 6)
    with pytest.raises(ValueError, match="data.workers"):
        plan_threads(-2, "cpu", cores=2, load=0.0, environ={})


def test_processes_on_one_machine_share_it():
    p = plan_threads(0, "cpu", cores=8, load=0.0, processes=2, environ={})
    assert p.intra_op == 4


def test_users_omp_num_threads_wins():
    p = plan_threads(-1, "cpu", cores=16, load=0.0, environ={"OMP_NUM_THREADS": "3"})
    assert (p.intra_op, p.source) == (3, "OMP_NUM_THREADS")
    assert "from OMP_NUM_THREADS" in p.describe()
    assert plan_threads(0, "cpu", cores=4, load=0.0, environ={"OMP_NUM_THREADS": "junk"}).intra_op == 4


def test_usable_cores_follow_a_cgroup_quota(tmp_path):
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")  # 1.5 CPUs
    assert usable_cores(cpu_max) == min(2, usable_cores(tmp_path / "absent"))
    cpu_max.write_text("max 100000\n")
    assert usable_cores(cpu_max) == usable_cores(tmp_path / "absent") >= 1


def test_openmp_env_defaults_keep_the_users_choice():
    env: dict[str, str] = {}
    openmp_env_defaults(env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    openmp_env_defaults(env)
    assert env == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_apply_plan_sets_intra_op_threads(keep_torch_threads):
    apply_plan(ThreadPlan(4, 0.0, True, 0, 1, "plan"))
    assert torch.get_num_threads() == 1


def test_training_setup_uses_the_plan(tiny_split, monkeypatch, keep_torch_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    monkeypatch.setattr(threads, "machine_load", lambda: 1.0)
    cfg = config_from_dict({"data": {"train": str(tiny_split["train"]), "val": str(tiny_split["val"]),
                                     "image_size": 64}, "train": {"device": "cpu"}})
    assert cfg.data.workers == -1  # the default is automatic
    lines: list[str] = []
    _, train_loader, _, val_loader, _ = build_datasets(cfg, Dist(), log=lines.append)
    assert (train_loader.num_workers, val_loader.num_workers) == (1, 1)  # 7 free cores: 7 // 4 workers
    assert torch.get_num_threads() == 6
    assert "threads: 6 intra-op, 1 loader worker (8 cores, load 1.0, idle threads spin)" in lines
