"""Tests for twiddle._execution: the process pool and the inline executor.

Tasks that must overlap in time meet through files (one creates a file and waits for
the other's), so no test depends on timing. Every wait has a timeout, so a bug fails
a test instead of hanging the suite. Most tests share one "spawn" pool; tests of the
pool's life cycle start their own, with the fast "fork" start method where it is
available.
"""

from __future__ import annotations

import concurrent.futures
import gc
import multiprocessing
import os
import pickle
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from twiddle import _execution
from twiddle._errors import InvalidParameterError, WorkerCrashedError
from twiddle._execution import InlineExecutor, ProcessExecutor, TaskFuture

TIMEOUT = 60.0  # seconds; only reached if something is broken

# Send this module's functions to workers by value, so that workers need not import
# it (whatever pytest's import mode, and without importing pytest there).
cloudpickle.register_pickle_by_value(sys.modules[__name__])

posix_only = pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals")
needs_fork = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method"
)


# ------------------------------------------------------------------ helpers and tasks


def _wait_until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def _wait_for_file(path: Path, timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def _meet(mine: Path, other: Path, value: int) -> tuple[int, int]:
    """Announce this task, wait for the other one: both must run at the same time."""
    mine.touch()
    if not _wait_for_file(other):
        raise TimeoutError(f"{other} never appeared")
    return value, os.getpid()


def _square(x: int) -> int:
    return x * x


def _raise_value_error(text: str) -> None:
    raise ValueError(text)


class HoldsLockError(Exception):
    """Cannot be pickled: it holds a lock."""

    def __init__(self) -> None:
        super().__init__("this error holds a lock")
        self.lock = threading.Lock()


class TwoArgsError(Exception):
    """Pickles, but cannot be rebuilt from its args."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a} and {b}")


def _raise_holds_lock() -> None:
    raise HoldsLockError()


def _raise_two_args() -> None:
    raise TwoArgsError("left", "right")


def _return_lock() -> Any:
    return threading.Lock()


def _sigkill_self(flag: Path) -> None:
    flag.touch()
    os.kill(os.getpid(), signal.SIGKILL)


def _exit_3() -> None:
    os._exit(3)


def _sys_exit_4() -> None:
    raise SystemExit(4)


def _thread_state() -> dict[str, Any]:
    import numpy as np
    from threadpoolctl import threadpool_info

    np.ones((2, 2)) @ np.ones((2, 2))  # BLAS is loaded and used
    return {
        "env": {name: os.environ.get(name) for name in _execution._THREAD_LIMIT_VARS},
        "blas": [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"],
    }


def _touch(path: Path) -> None:
    path.touch()


def _pid_of(worker_id: str | None) -> int:
    assert worker_id is not None
    host, pid = worker_id.rsplit(":", 1)
    assert host == socket.gethostname()
    return int(pid)


def _is_reaped(pid: int) -> bool:
    """True when ``pid`` is no child of ours any more: not running, not a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


@pytest.fixture(scope="module")
def executor() -> Iterator[ProcessExecutor]:
    pool = ProcessExecutor(2)  # the default, "spawn"
    yield pool
    pool.shutdown(wait=True, cancel_futures=True)


def _full(pool: ProcessExecutor) -> None:
    """Wait until crashed workers of earlier tests have been replaced."""
    _wait_until(lambda: len(pool.worker_ids) == pool.n_workers)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", None])
def test_n_workers_is_validated(bad: Any) -> None:
    with pytest.raises(InvalidParameterError) as info:
        ProcessExecutor(bad)
    assert str(info.value) == (
        f"The 'n_workers' parameter of ProcessExecutor must be an int >= 1. Got {bad!r} instead."
    )


def test_threads_per_worker_and_mp_context_are_validated() -> None:
    with pytest.raises(InvalidParameterError, match="'threads_per_worker' parameter"):
        ProcessExecutor(1, threads_per_worker=0)
    with pytest.raises(InvalidParameterError, match=r"'mp_context' parameter.*'spawn'"):
        ProcessExecutor(1, mp_context="bogus")


# ------------------------------------------------------------------ results


def test_results_land_in_their_futures_with_two_workers_busy(
    executor: ProcessExecutor, tmp_path: Path
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    first = executor.submit(_meet, a, b, 1)
    second = executor.submit(_meet, b, a, 2)
    squares = [executor.submit(_square, k) for k in range(40)]
    (v1, pid1), (v2, pid2) = first.result(TIMEOUT), second.result(TIMEOUT)
    assert (v1, v2) == (1, 2)
    assert pid1 != pid2  # the two tasks ran at the same time, in different workers
    assert {_pid_of(first.worker), _pid_of(second.worker)} == {pid1, pid2}
    assert [f.result(TIMEOUT) for f in squares] == [k * k for k in range(40)]
    assert all(isinstance(f, TaskFuture) for f in squares)


def test_future_names_its_worker(executor: ProcessExecutor) -> None:
    future = executor.submit(os.getpid)
    pid = future.result(TIMEOUT)
    assert future.worker == f"{socket.gethostname()}:{pid}"
    assert pid != os.getpid()


def test_lambda_closure_and_local_function(executor: ProcessExecutor) -> None:
    offset = 10

    def add_offset(x: int) -> int:
        return x + offset

    def make_scaler(k: int) -> Callable[[int], int]:
        return lambda x: k * x

    assert executor.submit(lambda: 7).result(TIMEOUT) == 7
    assert executor.submit(add_offset, 5).result(TIMEOUT) == 15
    assert executor.submit(make_scaler(3), 4).result(TIMEOUT) == 12
    assert executor.submit(lambda x, *, y: x - y, 5, y=2).result(TIMEOUT) == 3


def test_map_works(executor: ProcessExecutor) -> None:
    assert list(executor.map(pow, [2, 3, 4], [3, 2, 1], timeout=TIMEOUT)) == [8, 9, 4]


# ------------------------------------------------------------------ errors


def test_task_exception_keeps_type_message_and_worker_traceback(
    executor: ProcessExecutor,
) -> None:
    future = executor.submit(_raise_value_error, "bad value 42")
    with pytest.raises(ValueError, match="bad value 42") as info:
        future.result(TIMEOUT)
    cause = str(info.value.__cause__)
    assert "_raise_value_error" in cause and "Traceback" in cause
    assert executor.submit(_square, 3).result(TIMEOUT) == 9  # the worker lives on


@pytest.mark.parametrize(
    ("task", "name", "text"),
    [
        (_raise_holds_lock, "HoldsLockError", "this error holds a lock"),
        (_raise_two_args, "TwoArgsError", "left and right"),
    ],
)
def test_unpicklable_exception_becomes_runtime_error_with_traceback(
    executor: ProcessExecutor, task: Callable[[], None], name: str, text: str
) -> None:
    _full(executor)
    workers = executor.worker_ids
    with pytest.raises(RuntimeError) as info:
        executor.submit(task).result(TIMEOUT)
    message = str(info.value)
    assert f"The task raised {name}: {text}" in message
    assert "cannot be pickled" in message
    assert "Traceback" in message and task.__name__ in message
    assert executor.worker_ids == workers  # no worker died


def test_unpicklable_result_fails_only_its_future(executor: ProcessExecutor) -> None:
    _full(executor)
    workers = executor.worker_ids
    with pytest.raises(RuntimeError, match="returned a lock object that cannot be pickled"):
        executor.submit(_return_lock).result(TIMEOUT)
    assert executor.submit(_square, 4).result(TIMEOUT) == 16
    assert executor.worker_ids == workers


def test_unpicklable_task_fails_its_future_at_once(executor: ProcessExecutor) -> None:
    lock = threading.Lock()
    future = executor.submit(lambda: lock.locked())
    assert future.done()
    with pytest.raises(pickle.PicklingError, match="could not pickle task"):
        future.result(0)


# ------------------------------------------------------------------ crashes


@posix_only
def test_sigkill_fails_only_its_own_task(executor: ProcessExecutor, tmp_path: Path) -> None:
    killed = tmp_path / "killed"
    survivor = executor.submit(_meet, tmp_path / "survivor", killed, 1)
    victim = executor.submit(_sigkill_self, killed)
    with pytest.raises(WorkerCrashedError) as info:
        victim.result(TIMEOUT)
    message = str(info.value)
    assert "signal SIGKILL" in message and "_sigkill_self" in message
    assert f"worker process {_pid_of(victim.worker)}" in message
    assert "the other tasks go on" in message
    # the task in the other worker, in flight while its neighbour died, is unharmed
    assert survivor.result(TIMEOUT)[0] == 1
    assert survivor.worker != victim.worker
    # later tasks run, and the dead worker is replaced
    assert [executor.submit(_square, k).result(TIMEOUT) for k in range(3)] == [0, 1, 4]
    _wait_until(lambda: len(executor.worker_ids) == 2 and victim.worker not in executor.worker_ids)


@pytest.mark.parametrize(("task", "code"), [(_exit_3, 3), (_sys_exit_4, 4)])
def test_exit_code_is_named(executor: ProcessExecutor, task: Callable[[], None], code: int) -> None:
    future = executor.submit(task)
    expected = f"exited with code {code} while running task {task.__name__}"
    with pytest.raises(WorkerCrashedError, match=expected):
        future.result(TIMEOUT)
    assert executor.submit(_square, 5).result(TIMEOUT) == 25


# ------------------------------------------------------------------ thread limits


def test_workers_are_limited_to_one_blas_thread(executor: ProcessExecutor) -> None:
    state = executor.submit(_thread_state).result(TIMEOUT)
    assert set(state["env"].values()) == {"1"}
    assert state["blas"], "numpy's BLAS was not found by threadpoolctl"
    assert all(n == 1 for n in state["blas"])


@needs_fork
@pytest.mark.parametrize("threads", [1, 2])
def test_thread_limits_hold_after_fork_and_leave_the_driver_alone(
    monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    # numpy is loaded in this process already, so in a forked worker only
    # threadpoolctl can lower the number of BLAS threads.
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("NUMEXPR_NUM_THREADS", raising=False)
    with ProcessExecutor(1, threads_per_worker=threads, mp_context="fork") as pool:
        state = pool.submit(_thread_state).result(TIMEOUT)
    assert set(state["env"].values()) == {str(threads)}
    assert state["blas"] and all(n <= threads for n in state["blas"])
    assert os.environ["OMP_NUM_THREADS"] == "7"
    assert "NUMEXPR_NUM_THREADS" not in os.environ


# ------------------------------------------------------------------ cancellation


def test_cancel_a_queued_task(executor: ProcessExecutor, tmp_path: Path) -> None:
    release = tmp_path / "release"
    blockers = [executor.submit(_wait_for_file, release) for _ in range(2)]
    queued = executor.submit(_touch, tmp_path / "queued ran")
    killed = executor.submit(_touch, tmp_path / "killed ran")
    assert queued.cancel()
    assert executor.kill_running(killed)  # a queued task is just cancelled
    assert queued.cancelled() and killed.cancelled()
    done, _ = concurrent.futures.wait([queued, killed], timeout=TIMEOUT)
    assert done == {queued, killed}  # waiters see the cancellation at once
    release.touch()
    assert [f.result(TIMEOUT) for f in blockers] == [True, True]
    executor.submit(_square, 1).result(TIMEOUT)  # the queue has moved past them
    assert not (tmp_path / "queued ran").exists()
    assert not (tmp_path / "killed ran").exists()
    assert not executor.kill_running(blockers[0])  # finished already


@posix_only
def test_kill_a_running_task(executor: ProcessExecutor) -> None:
    future = executor.submit(time.sleep, 600)
    _wait_until(future.running)
    worker = future.worker
    assert executor.kill_running(future)
    with pytest.raises(concurrent.futures.CancelledError, match="by killing its worker"):
        future.result(TIMEOUT)
    assert not executor.kill_running(future)
    assert executor.submit(_square, 6).result(TIMEOUT) == 36
    _wait_until(lambda: len(executor.worker_ids) == 2 and worker not in executor.worker_ids)


# ------------------------------------------------------------------ life cycle


def _start_method() -> str:
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def test_shutdown_leaves_no_child_processes() -> None:
    pool = ProcessExecutor(2, mp_context=_start_method())
    assert pool.submit(_square, 2).result(TIMEOUT) == 4
    pids = [_pid_of(worker) for worker in pool.worker_ids]
    thread = pool._pool.thread
    pool.shutdown()
    assert not thread.is_alive()
    assert pool.worker_ids == ()
    assert all(_is_reaped(pid) for pid in pids)
    assert not {p.pid for p in multiprocessing.active_children()} & set(pids)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(_square, 1)


def test_shutdown_right_after_start_is_quick() -> None:
    pool = ProcessExecutor(2)  # spawn: the workers are still starting
    pids = [_pid_of(worker) for worker in pool.worker_ids]
    start = time.monotonic()
    pool.shutdown()
    assert time.monotonic() - start < 5.0
    assert all(_is_reaped(pid) for pid in pids)


def test_shutdown_cancel_futures(tmp_path: Path) -> None:
    release = tmp_path / "release"
    with ProcessExecutor(1, mp_context=_start_method()) as pool:
        running = pool.submit(_wait_for_file, release)
        _wait_until(running.running)
        queued = [pool.submit(_touch, tmp_path / f"ran {k}") for k in range(3)]
        pool.shutdown(wait=False, cancel_futures=True)
        assert all(f.cancelled() for f in queued)
        done, _ = concurrent.futures.wait(queued, timeout=TIMEOUT)
        assert done == set(queued)
        release.touch()
        assert running.result(TIMEOUT) is True  # running tasks finish
    assert not list(tmp_path.glob("ran *"))


def test_dropped_executor_stops_its_workers() -> None:
    pool = ProcessExecutor(1, mp_context=_start_method())
    future = pool.submit(_square, 3)
    thread = pool._pool.thread
    pid = _pid_of(pool.worker_ids[0])
    del pool
    gc.collect()
    assert future.result(TIMEOUT) == 9  # queued work still finishes
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert _is_reaped(pid)


def _die_at_start(conn: Any, threads: int) -> None:
    os._exit(5)


@needs_fork
def test_workers_that_cannot_start_break_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_execution, "_worker_main", _die_at_start)
    pool = ProcessExecutor(1, mp_context="fork")
    future = pool.submit(_square, 2)
    with pytest.raises(WorkerCrashedError, match=r"fail to start .*exited with code 5"):
        future.result(TIMEOUT)
    with pytest.raises(WorkerCrashedError, match="fail to start"):
        pool.submit(_square, 2)
    pool.shutdown()
    assert pool.worker_ids == ()


def test_repr_and_properties() -> None:
    pool = ProcessExecutor(1, threads_per_worker=2)
    try:
        assert (
            repr(pool) == "ProcessExecutor(n_workers=1, threads_per_worker=2, mp_context='spawn')"
        )
        assert (pool.n_workers, pool.threads_per_worker, pool.mp_context) == (1, 2, "spawn")
        assert len(pool.worker_ids) == 1
    finally:
        pool.shutdown()


# ------------------------------------------------------------------ InlineExecutor


def test_inline_executor_runs_in_submit() -> None:
    calls: list[int] = []
    executor = InlineExecutor()
    future = executor.submit(lambda x: calls.append(x) or x + 1, 1)
    assert calls == [1]  # ran before submit returned
    assert future.done() and future.result(0) == 2
    assert future.worker == f"{socket.gethostname()}:{os.getpid()}"
    assert list(executor.map(_square, [1, 2, 3])) == [1, 4, 9]


def test_inline_executor_stores_exceptions() -> None:
    future = InlineExecutor().submit(_raise_value_error, "stored")
    assert isinstance(future.exception(0), ValueError)
    with pytest.raises(ValueError, match="stored"):
        future.result(0)


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
def test_inline_executor_propagates_interrupts(error: type[BaseException]) -> None:
    def interrupt() -> None:
        raise error()

    with pytest.raises(error):
        InlineExecutor().submit(interrupt)


def test_inline_executor_shutdown() -> None:
    with InlineExecutor() as executor:
        assert executor.submit(_square, 2).result(0) == 4
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(_square, 2)


# ------------------------------------------------------------------ calls to the driver


def _ask_driver(key: str, request: Any) -> tuple[bool, Any, int]:
    found, answer = _execution.call_driver(key, request)
    return found, answer, os.getpid()


def _ask_twice(key: str) -> list[tuple[bool, Any]]:
    return [_execution.call_driver(key, i) for i in (1, 2)]


def test_a_worker_task_calls_the_driver_handler(executor: ProcessExecutor) -> None:
    seen: list[tuple[Any, int, str]] = []

    def handler(request: Any) -> Any:
        seen.append((request, os.getpid(), threading.current_thread().name))
        return {"doubled": request * 2}

    key = _execution.register_handler(handler)
    try:
        found, answer, pid = executor.submit(_ask_driver, key, 21).result(timeout=TIMEOUT)
        assert found and answer == {"doubled": 42}
        assert pid != os.getpid()  # asked from a worker, answered here
        assert seen == [(21, os.getpid(), seen[0][2])]
        assert seen[0][2] != threading.current_thread().name  # by the manager thread
        # several calls in one task, and the task's own reply still arrives after them
        assert executor.submit(_ask_twice, key).result(timeout=TIMEOUT) == [
            (True, {"doubled": 2}),
            (True, {"doubled": 4}),
        ]
    finally:
        _execution.unregister_handler(key)
    found, answer, _ = executor.submit(_ask_driver, key, 1).result(timeout=TIMEOUT)
    assert (found, answer) == (False, None)


def test_a_failing_handler_answers_not_found_and_the_pool_goes_on(
    executor: ProcessExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    def handler(request: Any) -> Any:
        raise ValueError("broken handler")

    key = _execution.register_handler(handler)
    try:
        found, answer, _ = executor.submit(_ask_driver, key, 1).result(timeout=TIMEOUT)
    finally:
        _execution.unregister_handler(key)
    assert (found, answer) == (False, None)
    assert "call from a worker" in caplog.text
    assert executor.submit(pow, 2, 5).result(timeout=TIMEOUT) == 32


def test_calls_in_the_driver_process_reach_the_handler_directly() -> None:
    key = _execution.register_handler(lambda request: request + 1)
    try:
        assert InlineExecutor().submit(_ask_driver, key, 1).result()[:2] == (True, 2)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            assert pool.submit(_ask_driver, key, 2).result(timeout=TIMEOUT)[:2] == (True, 3)
        # a failing handler counts as not found here too
        assert InlineExecutor().submit(_ask_driver, key, "x").result()[:2] == (False, None)
    finally:
        _execution.unregister_handler(key)


@needs_fork
def test_a_forked_foreign_pool_cannot_answer_from_its_copy() -> None:
    # A child of fork inherits the handler table; it must not answer from its copy
    # (and a handler registered without remote=True has no other way back).
    key = _execution.register_handler(lambda request: "stale copy")
    try:
        ctx = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
            found, answer, pid = pool.submit(_ask_driver, key, 1).result(timeout=TIMEOUT)
    finally:
        _execution.unregister_handler(key)
    assert pid != os.getpid()
    assert (found, answer) == (False, None)


def _spawn_pool() -> concurrent.futures.ProcessPoolExecutor:
    return concurrent.futures.ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn")
    )


@pytest.mark.slow
def test_a_foreign_pool_reaches_a_remote_handler_through_the_call_server() -> None:
    seen: list[Any] = []

    def handler(request: Any) -> Any:
        seen.append(request)
        return request * 10

    key = _execution.register_handler(handler, remote=True)
    other = _execution.register_handler(lambda request: -request, remote=True)
    plain = _execution.register_handler(lambda request: "no way back")
    try:
        assert "@" in key and "@" not in plain
        with _spawn_pool() as pool:
            found, answer, pid = pool.submit(_ask_driver, key, 4).result(timeout=TIMEOUT)
            assert pid != os.getpid()
            assert (found, answer) == (True, 40)
            # the worker keeps its connection: several calls from one task
            assert pool.submit(_ask_twice, key).result(timeout=TIMEOUT) == [(True, 10), (True, 20)]
            # a handler registered without remote=True has no way back from there
            assert pool.submit(_ask_driver, plain, 1).result(timeout=TIMEOUT)[:2] == (False, None)
            # the right address with a wrong key fails the handshake: not found
            forged = key[:-2] + ("11" if key.endswith("00") else "00")
            assert pool.submit(_ask_driver, forged, 1).result(timeout=TIMEOUT)[:2] == (False, None)
            assert seen == [4, 1, 2]
            # a removed handler is not found; the server goes on for the other one
            _execution.unregister_handler(key)
            assert pool.submit(_ask_driver, key, 1).result(timeout=TIMEOUT)[:2] == (False, None)
            assert pool.submit(_ask_driver, other, 3).result(timeout=TIMEOUT)[:2] == (True, -3)
            # the server stops with the last remote handler
            _execution.unregister_handler(other)
            assert _execution._SERVER is None
            assert pool.submit(_ask_driver, other, 3).result(timeout=TIMEOUT)[:2] == (False, None)
    finally:
        for k in (key, other, plain):
            _execution.unregister_handler(k)


def test_a_driver_host_it_cannot_listen_on_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TWIDDLE_DRIVER_HOST", "no-such-host.invalid")
    with pytest.raises(ValueError, match=r"TWIDDLE_DRIVER_HOST='no-such-host\.invalid'.*'off'"):
        _execution.register_handler(lambda request: request, remote=True)
    assert _execution._SERVER is None
    monkeypatch.setenv("TWIDDLE_DRIVER_HOST", "off")  # no server, no address in the key
    key = _execution.register_handler(lambda request: request, remote=True)
    try:
        assert "@" not in key and _execution._SERVER is None
    finally:
        _execution.unregister_handler(key)


def _many_first_calls(key: str, n: int) -> list[tuple[bool, Any]]:
    # n threads make their first call at once (each thread has its own connection)
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda i: _execution.call_driver(key, i), range(n)))


@pytest.mark.slow
def test_the_call_server_answers_many_first_calls_at_once() -> None:
    key = _execution.register_handler(lambda request: request + 100, remote=True)
    try:
        with _spawn_pool() as pool:
            answers = pool.submit(_many_first_calls, key, 32).result(timeout=TIMEOUT)
        assert answers == [(True, i + 100) for i in range(32)]
    finally:
        _execution.unregister_handler(key)


@pytest.mark.slow
def test_a_silent_connection_blocks_neither_callers_nor_close() -> None:
    key = _execution.register_handler(lambda request: "answered", remote=True)
    host, port, _ = key.rpartition("@")[2].rsplit(":", 2)
    silent = socket.create_connection((host, int(port)))  # connects, never says a word
    try:
        with _spawn_pool() as pool:
            found = pool.submit(_ask_driver, key, 1).result(timeout=TIMEOUT)[:2]
        assert found == (True, "answered")
        closer = threading.Thread(target=_execution.unregister_handler, args=(key,))
        closer.start()
        closer.join(TIMEOUT)
        assert not closer.is_alive(), "closing the server hung on the silent connection"
        assert _execution._SERVER is None
    finally:
        silent.close()
        _execution.unregister_handler(key)


@needs_fork
@pytest.mark.slow
def test_a_forked_worker_does_not_keep_the_server_listening() -> None:
    # The worker is forked while the server runs; once the driver closes the server,
    # a call from it must be refused at once, not hang on an inherited listener.
    key = _execution.register_handler(lambda request: "live", remote=True)
    ctx = multiprocessing.get_context("fork")
    try:
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
            assert pool.submit(os.getpid).result(timeout=TIMEOUT) != os.getpid()  # forked now
            _execution.unregister_handler(key)
            # refused at once; an inherited listener would leave the handshake to time out
            wait = _execution._CALL_TIMEOUT / 2
            found = pool.submit(_ask_driver, key, 1).result(timeout=wait)[:2]
        assert found == (False, None)
    finally:
        _execution.unregister_handler(key)


class _NotPlain:
    def __reduce__(self) -> Any:
        return (print, ("this must not run in the driver",))


def test_calls_over_tcp_carry_plain_data_only(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[Any] = []
    key = _execution.register_handler(seen.append, remote=True)
    try:
        good = _execution._CALL + pickle.dumps((key, {"step": [1, 2.5, "x", None]}))
        assert pickle.loads(_execution._answer_call(good, plain=True)) == (True, None)
        bad = _execution._CALL + pickle.dumps((key, _NotPlain()))
        assert pickle.loads(_execution._answer_call(bad, plain=True)) == (False, None)
        assert seen == [{"step": [1, 2.5, "x", None]}]
        assert "must not run" not in capsys.readouterr().out
        # an extension code is refused before any lookup (protocol 2, EXT1 code 1)
        with pytest.raises(pickle.UnpicklingError, match="EXT1"):
            _execution._PlainUnpickler(b"\x80\x02\x82\x01.").load()
    finally:
        _execution.unregister_handler(key)


@pytest.mark.parametrize("host", ["0.0.0.0", "0"])
def test_a_listen_everywhere_address_is_refused(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWIDDLE_DRIVER_HOST", host)
    with pytest.raises(ValueError, match="no address a worker can connect to"):
        _execution.register_handler(lambda request: request, remote=True)
    assert _execution._SERVER is None


@pytest.mark.slow
def test_a_handshake_that_trickles_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    # one byte now and then keeps every read within its timeout; the whole handshake
    # still has a deadline (shortened here to keep the test short)
    monkeypatch.setattr(_execution, "_CALL_TIMEOUT", 0.5)
    key = _execution.register_handler(lambda request: request, remote=True)
    try:
        host, port, _ = key.rpartition("@")[2].rsplit(":", 2)
        with socket.create_connection((host, int(port))) as sock:
            sock.settimeout(TIMEOUT)
            sock.recv(4096)  # the server's challenge
            sock.sendall(b"\x00\x00\x00\xff")  # an answer of 255 bytes follows ...
            cut = False
            for _ in range(100):  # up to about 10 s
                try:
                    sock.sendall(b"\x00")  # ... one byte at a time
                except OSError:
                    cut = True
                    break
                time.sleep(0.1)
            assert cut, "the server kept a trickling handshake open"
    finally:
        _execution.unregister_handler(key)
