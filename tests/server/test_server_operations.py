"""Operation store persistence and the operations runner (with stand-in jobs, no model)."""

import threading
import time

import grpc
import pytest

from parasal.core.evaluation import Cancelled
from parasal.server.config import ConfigError
from parasal.server.errors import NotFound, ResourceExhausted
from parasal.server.operations import Operations
from parasal.server.store import ABORTED_MESSAGE, NEVER_STARTED_MESSAGE, OperationStore, new_operation_id
from parasal.v1 import saliency_pb2 as pb

FINETUNE = pb.OPERATION_KIND_FINETUNE_EVALUATION


def record(state, i=None):
    op = pb.Operation(id=i or new_operation_id(), kind=FINETUNE, state=state, bundle="b")
    op.created_at.GetCurrentTime()
    return op


def test_records_survive_reopening_and_list_newest_first(tmp_path):
    with OperationStore(tmp_path) as store:
        ops = [record(pb.OPERATION_STATE_SUCCEEDED) for _ in range(3)]
        ops[1].finetune.rows.add(selection=pb.SELECTION_MOST_SALIENT, count=5, neighbors_evaluated=4)
        for op in ops:
            store.put(op)
    with OperationStore(tmp_path) as store:
        assert store.get(ops[1].id) == ops[1]
        assert [op.id for op in store.list(10)] == [op.id for op in reversed(ops)]
        assert len(store.list(2)) == 2
        assert store.get("nope") is None


def test_unfinished_records_read_aborted_after_a_restart(tmp_path):
    with OperationStore(tmp_path) as store:
        running, pending, done = (
            record(s) for s in (pb.OPERATION_STATE_RUNNING, pb.OPERATION_STATE_PENDING, pb.OPERATION_STATE_SUCCEEDED)
        )
        for op in (running, pending, done):
            store.put(op)
    ops = Operations(OperationStore(tmp_path))
    try:
        for op in (running, pending):
            got = ops.get(op.id)
            assert got.state == pb.OPERATION_STATE_ABORTED
            expected = ABORTED_MESSAGE if op is running else NEVER_STARTED_MESSAGE  # a pending one never ran
            assert got.message == expected and got.error.code == grpc.StatusCode.ABORTED.value[0]
        assert ops.get(done.id).state == pb.OPERATION_STATE_SUCCEEDED
        assert [o.id for o in ops.list(10, pb.OPERATION_STATE_ABORTED)] == [pending.id, running.id]
    finally:
        ops.close()


def test_one_server_per_state_dir(tmp_path):
    with OperationStore(tmp_path):
        with pytest.raises(ConfigError, match="in use"):
            OperationStore(tmp_path)
    OperationStore(tmp_path).close()  # released on close


def test_prune_keeps_the_newest_finished(tmp_path):
    with OperationStore(tmp_path) as store:
        ids = []
        for state in [pb.OPERATION_STATE_SUCCEEDED] * 4 + [pb.OPERATION_STATE_RUNNING]:
            op = record(state)
            ids.append(op.id)
            store.put(op)
        assert store.prune(2) == 3
        assert [op.id for op in store.list(10)] == [ids[4], ids[3]]


@pytest.fixture
def ops(tmp_path):
    operations = Operations(OperationStore(tmp_path), max_operations=2, workers=1, progress_interval_s=0.0)
    yield operations
    operations.close()


def result_job(progress, should_stop):
    for i in range(3):
        progress((i + 1) / 3, f"step {i}")
    return pb.FinetuneEvaluationResult(step_size=0.5, neighbor_ids=[1, 2])


def wait_terminal(ops, op_id):
    return list(ops.watch(op_id))[-1]


def test_a_job_runs_to_success_and_watch_sees_its_progress(ops):
    steps = threading.Semaphore(0)  # the job takes a step each time the watcher saw a change

    def job(progress, should_stop):
        for i in range(3):
            assert steps.acquire(timeout=10)
            progress((i + 1) / 3, f"step {i}")
        return pb.FinetuneEvaluationResult(step_size=0.5, neighbor_ids=[1, 2])

    op = ops.start(FINETUNE, "b", job)
    assert op.state == pb.OPERATION_STATE_PENDING
    seen = []
    for snapshot in ops.watch(op.id):
        seen.append(snapshot)
        steps.release()
    assert seen[-1].state == pb.OPERATION_STATE_SUCCEEDED and seen[-1].progress == 1.0
    assert seen[-1].finetune.neighbor_ids == [1, 2]
    assert any(0 < s.progress < 1 and s.state == pb.OPERATION_STATE_RUNNING for s in seen), seen
    assert ops.get(op.id) == seen[-1]
    assert ops.store.get(op.id) == seen[-1]  # written through


def test_cancel_a_running_job_and_a_pending_one(ops):
    started = threading.Event()

    def slow(progress, should_stop):
        started.set()
        while not should_stop():
            time.sleep(0.01)
        raise Cancelled("stopped")

    running = ops.start(FINETUNE, "b", slow)
    pending = ops.start(FINETUNE, "b", result_job)  # waits: one worker
    assert started.wait(5)
    assert ops.cancel(pending.id).state == pb.OPERATION_STATE_CANCELLED
    ops.cancel(running.id)
    assert wait_terminal(ops, running.id).state == pb.OPERATION_STATE_CANCELLED
    finished = ops.get(running.id)
    assert ops.cancel(running.id) == finished  # terminal: unchanged
    with pytest.raises(NotFound):
        ops.cancel("unknown")


def test_the_pool_is_bounded(ops):
    gate = threading.Event()
    blocked = [ops.start(FINETUNE, "b", lambda p, s: gate.wait(5) and result_job(p, s)) for _ in range(2)]
    with pytest.raises(ResourceExhausted):
        ops.start(FINETUNE, "b", result_job)
    gate.set()
    for op in blocked:
        assert wait_terminal(ops, op.id).state == pb.OPERATION_STATE_SUCCEEDED
    ops.start(FINETUNE, "b", result_job)  # room again


def test_a_failing_job_records_a_generic_internal_error(ops):
    def broken(progress, should_stop):
        raise RuntimeError("disk path /secret/x")

    op = wait_terminal(ops, ops.start(FINETUNE, "b", broken).id)
    assert op.state == pb.OPERATION_STATE_FAILED
    assert op.error.code == grpc.StatusCode.INTERNAL.value[0] and "secret" not in op.error.message


def test_shutdown_aborts_what_is_running(tmp_path):
    ops = Operations(OperationStore(tmp_path), max_operations=3, workers=1)
    started = threading.Event()

    def slow(progress, should_stop):
        started.set()
        while not should_stop():
            time.sleep(0.01)
        raise Cancelled("stopped")

    running = ops.start(FINETUNE, "b", slow)
    pending = ops.start(FINETUNE, "b", result_job)
    assert started.wait(5)
    ops.close()
    with OperationStore(tmp_path) as store:
        for op in (running, pending):
            assert store.get(op.id).state == pb.OPERATION_STATE_ABORTED
        # the one still waiting for a worker never ran, and its record says so
        assert store.get(running.id).message == ABORTED_MESSAGE
        assert store.get(pending.id).message == store.get(pending.id).error.message == NEVER_STARTED_MESSAGE
