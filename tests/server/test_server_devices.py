"""Devices and thread settings; model replicas lent one call at a time."""

import threading

import pytest
import torch

from parasal.server.config import ConfigError
from parasal.server.devices import resolve_device, torch_threads, usable_cores
from parasal.server.replicas import Replicas


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")


def test_torch_threads_are_restored_even_after_an_error():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    with pytest.raises(RuntimeError), torch_threads(usable_cores()):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before and usable_cores() >= 1


def test_replicas_are_copies_lent_to_one_caller_at_a_time():
    master = torch.nn.Linear(2, 2)
    replicas = Replicas(master, 1)
    with replicas.borrow() as model:
        assert model is not master and torch.equal(model.weight, master.weight)
        got = []
        waiter = threading.Thread(target=lambda: got.append(replicas.borrow().__enter__()))
        waiter.start()
        waiter.join(0.2)
        assert waiter.is_alive() and not got  # the only copy is lent: the second caller waits
    waiter.join(5)
    assert got == [model]  # given back, then lent again
    with pytest.raises(ValueError):
        Replicas(master, 0)
