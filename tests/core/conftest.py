import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: on a shared 2-core machine intra-op threads only spin against each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
