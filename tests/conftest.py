"""Suite-wide test settings."""

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    """Put the `long` tests at both ends of the run, balanced by their `seconds`. xdist's worksteal hands each
    of two workers a contiguous half of the list and cannot steal a worker's last two tests, so long tests
    side by side would run one after the other on one worker while the other idles. The `seconds` are a CI run's
    `--durations` (only their ratios matter)."""
    long = [item for item in items if item.get_closest_marker("long")]
    if not long:
        return
    seconds = {item: item.get_closest_marker("long").kwargs.get("seconds", 0) for item in long}
    ends: tuple[list, list] = ([], [])
    for item in sorted(long, key=lambda i: -seconds[i]):  # longest first, each to the lighter end
        ends[sum(map(seconds.get, ends[0])) > sum(map(seconds.get, ends[1]))].append(item)
    items[:] = ends[0] + [item for item in items if item not in seconds] + ends[1][::-1]


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Run the suite single-threaded: its tiny models gain nothing from intra-op threads, and on a busy
    2-core machine OpenMP's barriers make them 10-100x slower. Subprocesses (torchrun tests) are unaffected."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def run_two_ranks(tmp_path):
    """Run a worker script under `torchrun --nproc_per_node 2` (gloo, CPU) and return each rank's verdict.

    The worker writes `rank{R}.result` in its working folder: "OK", or "FAIL ..." with what differed. Files,
    not printed lines, because two processes printing at once interleave their output.
    """
    import os
    import subprocess
    import sys

    def run(worker_source: str, timeout: int = 180) -> list[str]:
        script = tmp_path / "worker.py"
        script.write_text(worker_source)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "0",
               "--rdzv_backend", "c10d", "--rdzv_endpoint", "127.0.0.1:0", str(script)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        return [(tmp_path / f"rank{r}.result").read_text() for r in (0, 1)]

    return run
