"""The default number of CPU threads: OMP_NUM_THREADS, else the CPU affinity capped by the cgroup quota."""

import os

import pytest

from napari_svi import threads


def _cgroup(tmp_path, own: str, limits: dict[str, str]):
    """A fake cgroup v2 tree under tmp_path/cg with ``cpu.max`` files, and a /proc/self/cgroup naming ``own``."""
    root = tmp_path / "cg"
    for folder, text in limits.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "cpu.max").write_text(text + "\n")
    (root / own).mkdir(parents=True, exist_ok=True)
    proc = tmp_path / "cgroup"
    proc.write_text(f"0::/{own}\n")
    return root, proc


def test_cgroup_quota_is_the_tightest_along_the_path(tmp_path):
    root, proc = _cgroup(tmp_path, "user/job", {".": "max 100000", "user": "300000 100000", "user/job": "150000 100000"})
    assert threads.cgroup_cpu_limit(root, proc) == pytest.approx(1.5)
    root, proc = _cgroup(tmp_path / "b", "job", {"job": "max 100000", ".": "200000 100000"})
    assert threads.cgroup_cpu_limit(root, proc) == pytest.approx(2.0)
    root, proc = _cgroup(tmp_path / "c", "job", {"job": "max 100000"})
    assert threads.cgroup_cpu_limit(root, proc) is None
    assert threads.cgroup_cpu_limit(tmp_path / "missing", tmp_path / "missing-proc") is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cgroup_cpu_limit(v1, tmp_path / "missing-proc") is None
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    assert threads.cgroup_cpu_limit(v1, tmp_path / "missing-proc") == pytest.approx(0.5)


def test_usable_cores_follow_affinity_and_quota(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    assert threads.usable_cores() == 6
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 2.5)
    assert threads.usable_cores() == 3  # a quota of 2.5 cores: 3 threads share it
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 0.2)
    assert threads.usable_cores() == 1
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 16.0)
    assert threads.usable_cores() == 6  # the affinity is tighter


def test_default_threads_prefer_omp_num_threads(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 5)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.default_threads() == 2
    for text in ("", "0", "lots"):
        monkeypatch.setenv("OMP_NUM_THREADS", text)
        assert threads.default_threads() == 5
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads.default_threads() == 5 == threads.choose_threads(None)
    assert threads.choose_threads(3) == 3
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads must be None"):
            threads.choose_threads(bad)
