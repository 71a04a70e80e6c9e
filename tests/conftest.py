"""Suite-wide test settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Run the suite single-threaded: its tiny models gain nothing from intra-op threads, and on a busy
    2-core machine OpenMP's barriers make them 10-100x slower. Subprocesses (torchrun tests) are unaffected."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
