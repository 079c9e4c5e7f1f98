"""Server processes as operators see them: auth, the operation pool, restarts and signals."""

from __future__ import annotations

import shutil
import signal
import subprocess

import numpy as np
import pytest

from parasal.client import Client, OperationCancelled, ParasalError, ResourceExhausted, Unauthenticated
from parasal.server.store import ABORTED_MESSAGE, OperationStore
from parasal.v1 import saliency_pb2 as pb

pytestmark = pytest.mark.slow  # real server processes / real bundles: part of make test

TOKEN = "e2e-token-5b1f"


def reference(bundle) -> int:
    return int(bundle.ids[np.flatnonzero(~bundle.correct)[0]])


def start_long(client, bundle):
    """An evaluation that runs for seconds (64 counts x 3 selections over every misclassified
    neighbour), so it is still pending or running when the test acts on it a moment later."""
    return client.start_finetune_evaluation(sample_id=reference(bundle), counts=list(range(1, 65)), num_neighbors=1000)


def self_signed_certificate(directory) -> tuple[str, str]:
    """(cert.pem, key.pem) for 127.0.0.1, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


def test_tls_token_auth_and_the_operation_pool(start_server, bundle, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    cert, key = self_signed_certificate(tmp_path)
    server = start_server(
        "--token-file", str(token_file), "--tls-cert", cert, "--tls-key", key, "--max-operations", "1"
    )

    def connect(token):
        return Client(server.address, token=token, timeout=30, tls=True, root_certificates=cert)

    for token in (None, "wrong"):
        with connect(token) as anonymous:
            with pytest.raises(Unauthenticated):
                anonymous.index_info()
            with pytest.raises(Unauthenticated):
                anonymous.operation_handle("x").result(timeout=10)  # streaming rpc too
    with connect(TOKEN) as client:
        assert client.index_info()[0].num_samples == bundle.num_samples
        long = start_long(client, bundle)
        with pytest.raises(ResourceExhausted):
            client.start_pruning_evaluation(sample_id=reference(bundle), counts=[1])
        long.cancel()
        with pytest.raises(OperationCancelled):
            long.result(timeout=120)
        # Room again once it is cancelled.
        client.start_pruning_evaluation(sample_id=reference(bundle), counts=[1]).result(timeout=120)
    with Client(server.address, token=TOKEN, timeout=10) as plaintext:  # the server speaks TLS only
        with pytest.raises(ParasalError):
            plaintext.index_info()
    assert TOKEN not in server.log()


def test_operations_survive_restarts(start_server, bundle, tmp_path):
    state = tmp_path / "state"
    first = start_server(state_dir=state)
    with Client(first.address, timeout=60) as client:
        done = client.start_pruning_evaluation(sample_id=reference(bundle), counts=[1, 5], num_neighbors=2)
        finished = done.result(timeout=120)
        running = start_long(client, bundle)
        assert client.operation(running.id).state in ("pending", "running")
    assert first.signal(signal.SIGKILL) == -signal.SIGKILL

    second = start_server(state_dir=state)
    with Client(second.address, timeout=60) as client:
        assert client.operation_handle(done.id).result(timeout=30) == finished
        killed = client.operation(running.id)
        assert killed.state == "aborted" and killed.message == ABORTED_MESSAGE
        interrupted = start_long(client, bundle)
        assert client.operation(interrupted.id).state in ("pending", "running")
    assert second.signal(signal.SIGTERM) == 0  # graceful: exit status 0
    assert "stopped" in second.log()

    with OperationStore(state) as store:  # what a third server would read
        assert store.get(interrupted.id).state == pb.OPERATION_STATE_ABORTED
        assert store.get(done.id).state == pb.OPERATION_STATE_SUCCEEDED
