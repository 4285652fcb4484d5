"""Executors: where tasks run.

The driver owns the loop: it submits (configuration, fold) tasks to an executor and
reads their results back. Any :class:`concurrent.futures.Executor` works; this module
provides two.

:class:`ProcessExecutor`
    A pool of local worker processes in which a worker that crashes or is killed fails
    only the task it was running. (The standard library's process pool breaks every
    future it holds when one worker dies.) Each worker runs one task at a time and is
    replaced when it dies. Tasks and results travel as ``cloudpickle`` bytes, so
    lambdas, closures and functions defined in ``__main__`` or in a notebook work.
:class:`InlineExecutor`
    Runs each task synchronously inside ``submit``, so ``n_jobs=1`` goes through the
    same interface.

Both return :class:`TaskFuture` objects, plain futures with one more attribute,
``worker``, naming the process ("hostname:pid") that ran the task.

How the process pool works
--------------------------
Each worker is a :mod:`multiprocessing` process with its own duplex pipe. A manager
thread in the driver owns all pipes and processes: it hands queued tasks to idle
workers, one task per worker at a time, and waits on every pipe and every process
sentinel at once. When a sentinel fires while its worker holds a task, that task's
future gets :class:`~twiddle._errors.WorkerCrashedError` naming the exit code or signal,
a replacement worker starts and the pool goes on. User threads talk to the manager
through a queue guarded by a lock and a wake-up pipe.

Calls from a running task to the driver
---------------------------------------
A task may ask the driver a question while it runs (a trial asking for the other
trials' learning curves, say): :func:`call_driver` sends ``(key, request)`` and waits
for the answer of the handler the driver registered under ``key`` with
:func:`register_handler`. In a worker of a :class:`ProcessExecutor` the call travels
on the worker's pipe and the manager thread answers it (handlers must therefore be
quick and thread-safe); in the driver's own process (:class:`InlineExecutor`, a
thread pool) the handler is called directly. Anywhere else (a Dask worker, another
pool) the call goes over TCP to the driver's call server (:class:`_CallServer`), if
the handler was registered with ``remote=True``; where that fails too,
:func:`call_driver` says so, for the caller to fall back on what it was given at
dispatch.

Thread limits in workers
------------------------
Running ``n_workers`` processes that each start one BLAS or OpenMP thread per core
oversubscribes the machine. Each worker is therefore limited to ``threads_per_worker``
threads in three ways:

1. The limit variables (``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
   ``MKL_NUM_THREADS``, ``VECLIB_MAXIMUM_THREADS``, ``NUMEXPR_NUM_THREADS``) are put in
   the environment the worker process starts with: the driver sets them in its own
   ``os.environ`` just around ``Process.start`` (under a lock) and restores them right
   after. This is the only place early enough for the "spawn" start method, whose child
   may import numpy before any twiddle code runs there (it re-imports the driver's main
   module, and importing this module imports the ``twiddle`` package), while numpy's
   BLAS reads these variables once, when it is loaded.
2. The worker sets the same variables in its own ``os.environ``, for libraries the
   tasks load later (this also covers the "fork" and "forkserver" start methods,
   whose children do not start from a fresh environment).
3. The worker calls ``threadpoolctl.threadpool_limits`` on start-up for the libraries
   already loaded, and once more after the first task that has imported numpy.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import multiprocessing
import multiprocessing.connection

# Imported now so that the standard library's exit handler, which joins live child
# processes, is registered before ours and therefore runs after ours (atexit runs
# handlers last-in, first-out): ours kills forgotten workers first.
import multiprocessing.util
import os
import pickle
import signal
import socket
import struct
import sys
import threading
import time
import traceback
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Executor, Future, InvalidStateError
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any, Generic, ParamSpec, TypeVar, cast

import cloudpickle

from twiddle._errors import WorkerCrashedError

__all__ = ["InlineExecutor", "ProcessExecutor", "TaskFuture"]

_T = TypeVar("_T")
_P = ParamSpec("_P")

_logger = logging.getLogger(__name__)

_HOSTNAME = socket.gethostname()

#: Environment variables read by BLAS and OpenMP runtimes when they load.
_THREAD_LIMIT_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)

#: Seconds a worker gets to exit after the stop message before it is killed.
_STOP_GRACE_SECONDS = 1.0
#: Workers dying before they are ready this many times in a row break the pool.
_MAX_START_FAILURES = 3
#: Exit code of a worker that noticed that the driver process is gone.
_ORPHAN_EXIT_CODE = 70

# Messages on a worker's pipe. Driver to worker: a task (cloudpickle bytes of
# ``(fn, args, kwargs)``) or _STOP. Worker to driver: _READY once, then one reply per
# task, the cloudpickle bytes of a tuple whose first item is one of the statuses below.
# While a task runs, the worker may also send _CALL + cloudpickle bytes of
# ``(key, request)``; the driver answers with the pickle bytes of ``(found, answer)``.
# (Pickle data starts with the PROTO opcode 0x80, so the prefix cannot be a reply.)
_READY = b"ready"
_CALL = b"call:"
_STOP = b""
_OK = 0  # (_OK, result)
_RAISED = 1  # (_RAISED, exception, traceback text)
_FAILED = 2  # (_FAILED, message): becomes a RuntimeError in the driver


# ------------------------------------------------------------ calls to the driver

#: The worker's end of its pipe, in a worker process of a ProcessExecutor.
_WORKER_CONN: Connection | None = None
_HANDLERS: dict[str, Callable[[Any], Any]] = {}
_HANDLERS_LOCK = threading.Lock()


#: Environment variable naming the interface the call server listens on.
DRIVER_HOST_VAR = "TWIDDLE_DRIVER_HOST"

_SERVER: _CallServer | None = None  # the call server, while a remote handler needs it
_SERVER_USERS: set[str] = set()  # keys of the remote handlers registered


def register_handler(handler: Callable[[Any], Any], *, remote: bool = False) -> str:
    """Let running tasks call ``handler(request)`` in this process; returns its key.

    The handler runs on the manager thread of a :class:`ProcessExecutor` (for calls
    from its workers), on the task's own thread (in this process) or, with
    ``remote=True``, on a thread of the call server (for calls from processes the
    driver did not start: a Dask worker, a standard-library pool), so it must be
    thread-safe and quick. ``remote=True`` starts the call server if it is not
    running (see :class:`_CallServer`) and puts its address and key in the handler's
    key, unless the environment variable ``TWIDDLE_DRIVER_HOST`` is ``off``. Remove
    the handler with :func:`unregister_handler`.
    """
    global _SERVER
    key = f"{os.getpid()}:{uuid.uuid4().hex}"
    host = os.environ.get(DRIVER_HOST_VAR, "").strip() or "127.0.0.1"
    with _HANDLERS_LOCK:
        if remote and host.lower() != "off":
            if _SERVER is None:
                try:
                    _SERVER = _CallServer(host)
                except OSError as exc:
                    raise ValueError(
                        f"The driver cannot listen on {DRIVER_HOST_VAR}={host!r} for calls "
                        f"from its workers ({exc}). Set {DRIVER_HOST_VAR} to an address of "
                        f"this machine (the default is 127.0.0.1), or to 'off' to let "
                        f"workers of other executors use what they are given at dispatch."
                    ) from exc
            key += "@" + _SERVER.contact
            _SERVER_USERS.add(key)
        _HANDLERS[key] = handler
    return key


def unregister_handler(key: str) -> None:
    """Forget the handler registered under ``key`` (nothing happens if there is none).

    The call server stops with the last remote handler.
    """
    global _SERVER
    server = None
    with _HANDLERS_LOCK:
        _HANDLERS.pop(key, None)
        _SERVER_USERS.discard(key)
        if _SERVER is not None and not _SERVER_USERS:
            server, _SERVER = _SERVER, None
    if server is not None:
        server.close()


def _local_handler(key: str) -> Callable[[Any], Any] | None:
    # A child made by fork inherits a copy of the table: only the process that
    # registered a handler may call it directly.
    if key.partition(":")[0] != str(os.getpid()):
        return None
    with _HANDLERS_LOCK:
        return _HANDLERS.get(key)


def call_driver(key: str, request: Any) -> tuple[bool, Any]:
    """Ask the handler registered under ``key`` in the driver; ``(found, answer)``.

    In the driver's process the handler is called directly; in a worker of a
    :class:`ProcessExecutor` the call travels on the worker's pipe; anywhere else it
    goes to the driver's call server if the handler was registered with
    ``remote=True``. ``found`` is False when this task cannot reach the driver or the
    driver has no such handler (any more); the answer is then None. Exceptions of the
    handler are not raised here: they are logged in the driver and the call counts
    as not found.
    """
    handler = _local_handler(key)
    if handler is not None:
        try:
            return True, handler(request)
        except Exception:
            _logger.exception("A call from a task to the driver failed; it counts as not found.")
            return False, None
    message = _CALL + cloudpickle.dumps((key, request))
    conn = _WORKER_CONN
    if conn is not None:
        conn.send_bytes(message)
        found, answer = pickle.loads(conn.recv_bytes())
        return bool(found), answer
    if "@" in key:
        return _call_server(key.rpartition("@")[2], message)
    return False, None


def _answer_call(data: bytes, *, plain: bool = False) -> bytes:
    """The reply bytes to a call message (run by the manager thread or the call server).

    With ``plain``, the request is unpickled as plain data only (see
    :class:`_PlainUnpickler`): calls over TCP may come from anyone holding the key.
    """
    try:
        payload = data[len(_CALL) :]
        if plain:
            key, request = _PlainUnpickler(payload).load()
        else:
            key, request = pickle.loads(payload)
        with _HANDLERS_LOCK:
            handler = _HANDLERS.get(key)
        answer = (True, handler(request)) if handler is not None else (False, None)
        return cloudpickle.dumps(answer)
    except Exception:
        _logger.exception("A call from a worker to the driver failed; it was answered 'not found'.")
        return cloudpickle.dumps((False, None))


#: Pickle opcodes that look up or build objects other than plain data.
_UNSAFE_OPCODES = frozenset(
    [
        "GLOBAL",
        "STACK_GLOBAL",
        "INST",
        "OBJ",
        "REDUCE",
        "NEWOBJ",
        "NEWOBJ_EX",
        "BUILD",
        "EXT1",
        "EXT2",
        "EXT4",
        "PERSID",
        "BINPERSID",
        "NEXT_BUFFER",
        "READONLY_BUFFER",
    ]
)


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles plain data only: None, bools, numbers, strings, bytes, lists, tuples,
    dicts and sets. A pickle with an opcode that looks up a class or calls something
    (a class, a function, a ``__reduce__``, an extension code) is refused before it
    is read, so a request cannot run code in the driver.
    """

    def __init__(self, data: bytes) -> None:
        import pickletools

        for opcode, _, _ in pickletools.genops(data):
            if opcode.name in _UNSAFE_OPCODES:
                raise pickle.UnpicklingError(f"opcode {opcode.name} is not plain data")
        super().__init__(io.BytesIO(data))

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name} is not plain data")


#: Seconds a call-server connection may take for its handshake, and a caller waits for
#: an answer (the handlers are quick; a driver that does not answer in time is treated
#: as unreachable).
_CALL_TIMEOUT = 30.0
#: Seconds between checks of the accept loop for a closed server.
_ACCEPT_POLL = 0.25


def _set_timeouts(sock: socket.socket, seconds: float) -> None:
    """OS-level send and receive timeouts (they outlive ``socket.detach``); 0: none."""
    whole = int(seconds)
    value = struct.pack("ll", whole, int((seconds - whole) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


class _CallServer:
    """Answers calls from tasks running in processes the driver did not start.

    A Dask worker or a standard-library pool has no pipe to the driver: such a task
    connects to this server over TCP and sends the call messages a worker of a
    :class:`ProcessExecutor` sends on its pipe. Both ends authenticate with the HMAC
    challenge of :mod:`multiprocessing.connection` on a random 32-byte key that
    travels with the tasks; the traffic itself is not encrypted. Requests are
    unpickled as plain data only, so a caller can ask questions but not run code in
    the driver; answers are pickled (the workers trust the driver anyway: it sends
    them the code they run).

    The server listens on ``host`` (the environment variable ``TWIDDLE_DRIVER_HOST``;
    default 127.0.0.1, which reaches workers on this machine only: for workers on
    other machines set it to an address of this machine they can reach; ``off``
    starts no server) on a free port. The accept thread only accepts (with a backlog
    of 128, for many workers reaching a rung at once); each connection gets its own
    thread, whose handshake must finish within ``_CALL_TIMEOUT`` seconds. A process
    forked from the driver closes its copies of the server's sockets.
    """

    def __init__(self, host: str) -> None:
        import ipaddress
        import secrets

        self._authkey = secrets.token_bytes(32)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, 0), family=family, backlog=128)
        bound_host, port = self._sock.getsockname()[:2]
        if ipaddress.ip_address(bound_host).is_unspecified:
            self._sock.close()
            raise OSError(f"{host!r} listens everywhere but is no address a worker can connect to")
        self._sock.settimeout(_ACCEPT_POLL)
        self.contact = f"{bound_host}:{port}:{self._authkey.hex()}"
        self._closed = False
        # each open connection's socket, and the Connection on a copy of it once made
        self._conns: dict[socket.socket, Connection | None] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._accept, name="twiddle-call-server", daemon=True
        )
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                sock, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._closed:
                    return
                time.sleep(_ACCEPT_POLL)  # out of file descriptors, say: do not spin
                continue
            with self._lock:
                if self._closed:
                    sock.close()
                    return
                self._conns[sock] = None
            try:
                threading.Thread(target=self._serve, args=(sock,), daemon=True).start()
            except RuntimeError:  # no thread to serve it: refuse this one, keep accepting
                with self._lock:
                    self._conns.pop(sock, None)
                sock.close()
                time.sleep(_ACCEPT_POLL)

    def _serve(self, sock: socket.socket) -> None:
        conn: Connection | None = None
        # the whole handshake must end in time, however slowly the caller trickles
        watchdog = threading.Timer(_CALL_TIMEOUT, _shut, args=(sock,))
        watchdog.daemon = True
        try:
            sock.setblocking(True)
            _set_timeouts(sock, _CALL_TIMEOUT)
            with self._lock:
                if sock not in self._conns:
                    return  # closed meanwhile
                conn = self._conns[sock] = Connection(os.dup(sock.fileno()))
            watchdog.start()
            multiprocessing.connection.deliver_challenge(conn, self._authkey)
            multiprocessing.connection.answer_challenge(conn, self._authkey)
            watchdog.cancel()
            _set_timeouts(sock, 0)  # then wait for calls as long as the caller lives
            while True:
                data = conn.recv_bytes()
                conn.send_bytes(_answer_call(data, plain=True))
        except (EOFError, OSError, multiprocessing.AuthenticationError):
            pass  # the caller left, failed the handshake, or the server closed
        finally:
            watchdog.cancel()
            with self._lock:
                self._conns.pop(sock, None)
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.close()
            sock.close()

    def close(self) -> None:
        """Stop accepting and end the open connections (their tasks then get "not found")."""
        with self._lock:
            self._closed = True
            socks, self._conns = list(self._conns), {}
        for sock in socks:
            # shut the socket down (its thread then reads EOF and closes it); closing it
            # under a thread blocked in a read would not wake that thread
            _shut(sock)
        self._sock.close()  # the accept loop sees _closed within _ACCEPT_POLL seconds

    def forget_in_child(self) -> None:
        """In a forked child: close the copies of the server's sockets, touch nothing else."""
        for sock, conn in [(self._sock, None), *self._conns.items()]:
            # close, never shut down: that would end the driver's connections too
            with contextlib.suppress(OSError):
                sock.close()
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.close()


def _shut(sock: socket.socket) -> None:
    """Shut a connection down for both ends (readers of every copy see EOF)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _after_fork_in_child() -> None:
    global _SERVER, _CLIENTS
    if _SERVER is not None:
        _SERVER.forget_in_child()
    _SERVER = None
    _SERVER_USERS.clear()
    _CLIENTS = threading.local()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

_CLIENTS = threading.local()  # per thread: {contact: Connection} to call servers


def _connect(contact: str) -> Connection:
    """An authenticated connection to the call server at ``contact`` (with timeouts)."""
    host, port, authkey = contact.rsplit(":", 2)
    key = bytes.fromhex(authkey)
    sock = socket.create_connection((host, int(port)), timeout=_CALL_TIMEOUT)
    try:
        sock.setblocking(True)
        _set_timeouts(sock, _CALL_TIMEOUT)  # for the handshake and every answer
        conn = Connection(sock.detach())
    except OSError:
        sock.close()
        raise
    try:
        multiprocessing.connection.answer_challenge(conn, key)
        multiprocessing.connection.deliver_challenge(conn, key)
    except BaseException:
        conn.close()
        raise
    return conn


def _call_server(contact: str, message: bytes) -> tuple[bool, Any]:
    """Send a call message to the call server at ``contact``; ``(found, answer)``."""
    conns: dict[str, Connection] = _CLIENTS.__dict__.setdefault("conns", {})
    conn = conns.get(contact)
    try:
        if conn is None:
            # a thread serves one run at a time: drop the connections of earlier runs
            for old in list(conns):
                with contextlib.suppress(OSError):
                    conns.pop(old).close()
            conn = conns[contact] = _connect(contact)
        conn.send_bytes(message)
        found, answer = pickle.loads(conn.recv_bytes())
        return bool(found), answer
    except (OSError, EOFError, ValueError, multiprocessing.AuthenticationError):
        # the driver is gone, its server closed, or it does not answer in time: the
        # caller keeps what it has
        stale = conns.pop(contact, None)
        if stale is not None:
            with contextlib.suppress(OSError):
                stale.close()
        return False, None


# --------------------------------------------------------------------------- futures


class TaskFuture(Future[_T], Generic[_T]):
    """A :class:`concurrent.futures.Future` that also names the worker running its task.

    Attributes
    ----------
    worker : str or None
        ``"hostname:pid"`` of the process that runs (or ran) the task, set when the task
        starts; ``None`` while the task is queued or if it never started. Executors
        that are not twiddle's return plain futures without this attribute, so read it
        with ``getattr(future, "worker", None)``.
    """

    worker: str | None

    def __init__(self) -> None:
        super().__init__()
        self.worker = None


class _RemoteTraceback(Exception):
    """Carries a worker's traceback text; set as ``__cause__`` of a re-raised error."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


def _set_result(future: Future[Any], value: Any) -> None:
    with contextlib.suppress(InvalidStateError):
        future.set_result(value)


def _set_exception(future: Future[Any], exc: BaseException) -> None:
    with contextlib.suppress(InvalidStateError):
        future.set_exception(exc)


def _notify_cancelled(future: Future[Any]) -> None:
    """Let ``wait()`` and ``as_completed()`` see a cancelled future that never ran."""
    with contextlib.suppress(RuntimeError):  # notified already
        future.set_running_or_notify_cancel()


def _describe_callable(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__qualname__", None)
    if not isinstance(name, str):
        name = type(fn).__qualname__
    return name if len(name) <= 80 else name[:77] + "..."


def _safe_str(obj: object) -> str:
    try:
        return str(obj)
    except Exception:
        return f"<unprintable {type(obj).__qualname__}>"


# ---------------------------------------------------------------- worker side


def _set_thread_limit_environ(threads: int) -> None:
    for name in _THREAD_LIMIT_VARS:
        os.environ[name] = str(threads)


def _limit_loaded_threadpools(threads: int) -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)


def _exit_when_orphaned(sentinel: int | None, parent_pid: int) -> None:
    """Watch the driver process from a worker, and end the worker when it is gone.

    Without this a worker whose driver was killed would finish its task first.
    """
    while True:
        if sentinel is not None:
            if multiprocessing.connection.wait([sentinel], timeout=1.0):
                break
        else:
            time.sleep(1.0)
        if os.getppid() != parent_pid:
            break
    os._exit(_ORPHAN_EXIT_CODE)


def _error_reply(exc: BaseException) -> bytes:
    tb_text = "".join(traceback.format_exception(exc))
    try:
        reply = cloudpickle.dumps((_RAISED, exc, tb_text))
        pickle.loads(reply)  # it must also come back to life in the driver
        return reply
    except Exception as pickle_exc:
        message = (
            f"The task raised {type(exc).__qualname__}: {_safe_str(exc)}\n"
            f"That exception cannot be pickled to send it back to the driver process "
            f"({type(pickle_exc).__name__}: {_safe_str(pickle_exc)}), so it is replaced "
            f"by this RuntimeError. To get the original type back, make the exception "
            f"picklable: keep only picklable values in it and let its class be rebuilt "
            f"from its args. Its traceback in the worker was:\n{tb_text}"
        )
        return cloudpickle.dumps((_FAILED, message))


def _run_task(payload: bytes) -> bytes:
    """Run one task and return the reply bytes; exceptions of the task are replies too."""
    try:
        fn, args, kwargs = pickle.loads(payload)
        result = fn(*args, **kwargs)
    except Exception as exc:
        return _error_reply(exc)
    try:
        return cloudpickle.dumps((_OK, result))
    except Exception as exc:
        message = (
            f"The task returned a {type(result).__qualname__} object that cannot be "
            f"pickled, so it cannot be sent back to the driver process "
            f"({type(exc).__name__}: {_safe_str(exc)}). Return plain data instead "
            f"(numbers, strings, lists, dicts, numpy arrays, picklable objects)."
        )
        return cloudpickle.dumps((_FAILED, message))


def _worker_main(conn: Connection, threads: int) -> None:
    """Entry point of a worker process: run the tasks that arrive on ``conn``, in turn.

    Parameters
    ----------
    conn : multiprocessing.connection.Connection
        The worker's end of its duplex pipe to the driver.
    threads : int
        Upper bound on BLAS and OpenMP threads in this process.
    """
    # Ctrl-C in a terminal reaches the whole process group; the driver decides what a
    # KeyboardInterrupt means and stops the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _WORKER_CONN
    _WORKER_CONN = conn
    _set_thread_limit_environ(threads)
    _limit_loaded_threadpools(threads)
    numpy_limited = "numpy" in sys.modules
    parent = multiprocessing.parent_process()
    threading.Thread(
        target=_exit_when_orphaned,
        args=(parent.sentinel if parent is not None else None, os.getppid()),
        name="twiddle-orphan-watch",
        daemon=True,
    ).start()
    try:
        conn.send_bytes(_READY)
        while True:
            payload = conn.recv_bytes()
            if payload == _STOP:
                return
            reply = _run_task(payload)
            del payload
            if not numpy_limited and "numpy" in sys.modules:
                _limit_loaded_threadpools(threads)
                numpy_limited = True
            conn.send_bytes(reply)
            del reply
    except (EOFError, OSError):
        return  # the driver went away


# ---------------------------------------------------------------- driver side

_ENV_LOCK = threading.Lock()


def _renew_env_lock() -> None:
    # A child made by fork copies the lock in whatever state the forking thread saw.
    global _ENV_LOCK
    _ENV_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_env_lock)


@contextlib.contextmanager
def _thread_limited_environ(threads: int) -> Iterator[None]:
    """Set the thread limit variables in ``os.environ`` for the duration of the block."""
    with _ENV_LOCK:
        saved = {name: os.environ.get(name) for name in _THREAD_LIMIT_VARS}
        try:
            _set_thread_limit_environ(threads)
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "died (its exit status is unknown)"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"number {-exitcode}"
        return f"died with signal {name}"
    return f"exited with code {exitcode}"


def _crash_hint(exitcode: int | None) -> str:
    if exitcode is None:
        return ""
    if exitcode == -getattr(signal, "SIGKILL", 9):
        return (
            " SIGKILL usually means that the operating system ran out of memory and "
            "killed the process, or that someone killed it; check how much memory the "
            "task needs."
        )
    if exitcode < 0:
        return " A signal like this usually means a crash in compiled code."
    return (
        " The task, or a library it called, ended the process (for example with "
        "os._exit() or sys.exit())."
    )


@dataclass(eq=False)
class _WorkItem:
    future: TaskFuture[Any]
    payload: bytes
    name: str
    started: bool = False  # set_running_or_notify_cancel() was called


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    conn: Connection
    worker_id: str
    ready: bool = False
    item: _WorkItem | None = None
    retiring: bool = False  # killed on purpose: its death is no crash


@dataclass(eq=False)
class _KillRequest:
    future: Future[Any]
    done: threading.Event = field(default_factory=threading.Event)
    killed: bool = False


class _Pool:
    """The state of a :class:`ProcessExecutor` and its manager thread.

    Kept apart from the executor object so that the manager thread does not keep the
    executor alive: when the user drops the executor, a finaliser shuts the pool down.
    ``workers`` is changed only by the manager thread (or by the constructor before that
    thread starts), under ``lock`` so that other threads can take snapshots; the pipes
    are used only by the manager thread.
    """

    def __init__(self, n_workers: int, threads: int, context: BaseContext) -> None:
        self.n_workers = n_workers
        self.threads = threads
        self.context = context
        self.lock = threading.Lock()
        self.pending: deque[_WorkItem] = deque()
        self.kill_requests: list[_KillRequest] = []
        self.workers: list[_Worker] = []
        self.shutdown_requested = False
        self.terminate_requested = False
        self.closed = False  # the manager thread has finished
        self.broken: str | None = None
        self.cancel_seen = False
        self.start_failures = 0
        self.wake_reader, self.wake_writer = multiprocessing.Pipe(duplex=False)
        self.wake_pending = False
        self.thread = threading.Thread(
            target=self._run, name="twiddle-process-executor", daemon=True
        )

    # ------------------------------------------------------------ any thread

    def wake_locked(self) -> None:
        """Wake the manager thread; call with ``lock`` held."""
        if not self.wake_pending:
            self.wake_pending = True
            with contextlib.suppress(OSError):
                self.wake_writer.send_bytes(b"w")

    def put(self, item: _WorkItem) -> None:
        with self.lock:
            if self.broken is not None:
                raise WorkerCrashedError(self.broken)
            if self.shutdown_requested or self.terminate_requested:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self.pending.append(item)
            self.wake_locked()
        item.future.add_done_callback(self._on_future_done)

    def _on_future_done(self, future: Future[Any]) -> None:
        if future.cancelled():  # a queued task was cancelled: let the manager notify
            with self.lock:
                self.cancel_seen = True
                self.wake_locked()

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        cancelled: list[_WorkItem] = []
        with self.lock:
            self.shutdown_requested = True
            if cancel_futures:
                cancelled = [item for item in self.pending if not item.started]
                self.pending = deque(item for item in self.pending if item.started)
            self.wake_locked()
        for item in cancelled:
            if item.future.cancel():
                _notify_cancelled(item.future)
        if wait and threading.current_thread() is not self.thread and self.thread.is_alive():
            self.thread.join()

    def terminate(self) -> None:
        """Kill every worker now, without waiting for tasks (at interpreter exit)."""
        with self.lock:
            self.terminate_requested = True
            processes = [worker.process for worker in self.workers]
            self.wake_locked()
        for process in processes:
            with contextlib.suppress(Exception):
                process.kill()
        for process in processes:
            with contextlib.suppress(Exception):
                process.join(timeout=1.0)
        if threading.current_thread() is not self.thread and self.thread.is_alive():
            self.thread.join(timeout=5.0)

    def kill(self, future: Future[Any]) -> bool:
        if threading.current_thread() is self.thread:  # e.g. from a done-callback
            return self._kill_task(future)
        request = _KillRequest(future)
        with self.lock:
            if self.closed:
                return False
            self.kill_requests.append(request)
            self.wake_locked()
        while not request.done.wait(timeout=0.5):
            if not self.thread.is_alive():
                return False
        return request.killed

    def worker_ids(self) -> tuple[str, ...]:
        with self.lock:
            return tuple(worker.worker_id for worker in self.workers)

    def ready_count(self) -> int:
        with self.lock:
            return sum(worker.ready for worker in self.workers)

    # --------------------------------------------------------- manager thread

    def start_worker(self) -> _Worker:
        parent_conn, child_conn = self.context.Pipe(duplex=True)
        process = self.context.Process(  # type: ignore[attr-defined]
            target=_worker_main,
            args=(child_conn, self.threads),
            name="twiddle-worker",
            daemon=False,  # daemonic processes may not start processes of their own
        )
        try:
            with _thread_limited_environ(self.threads):
                process.start()
        except BaseException:
            parent_conn.close()
            raise
        finally:
            child_conn.close()
        worker = _Worker(process, parent_conn, f"{_HOSTNAME}:{process.pid}")
        with self.lock:
            self.workers.append(worker)
            doomed = self.terminate_requested
        if doomed:
            process.kill()
        return worker

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # a bug here must not leave workers or futures behind
            _logger.exception("The manager thread of a ProcessExecutor failed.")
            with self.lock:
                if self.broken is None:
                    self.broken = (
                        f"The manager thread of the ProcessExecutor failed "
                        f"({type(exc).__name__}: {_safe_str(exc)}); please report this bug."
                    )
        finally:
            self._fail_remaining(self._stop_workers())

    def _loop(self) -> None:
        while True:
            self._serve_kill_requests()
            self._ensure_workers()
            self._dispatch()
            if self._finished():
                return
            waitables: list[Any] = [self.wake_reader]
            for worker in self.workers:
                waitables.append(worker.conn)
                waitables.append(worker.process.sentinel)
            ready = set(multiprocessing.connection.wait(waitables))
            if self.wake_reader in ready:
                with self.lock:
                    self.wake_pending = False
                    while self.wake_reader.poll():
                        self.wake_reader.recv_bytes()
            for worker in list(self.workers):
                if worker.conn in ready:
                    self._receive(worker)
            for worker in list(self.workers):
                if worker in self.workers and worker.process.sentinel in ready:
                    self._reap(worker)

    def _has_work_locked(self) -> bool:
        return any(not item.future.cancelled() for item in self.pending)

    def _finished(self) -> bool:
        with self.lock:
            if self.terminate_requested or self.broken is not None:
                return True
            if not self.shutdown_requested:
                return False
            busy = any(worker.item is not None for worker in self.workers)
            return not busy and not self._has_work_locked()

    def _ensure_workers(self) -> None:
        with self.lock:
            wanted = not (self.terminate_requested or self.broken is not None) and (
                not self.shutdown_requested or self._has_work_locked()
            )
        while wanted and len(self.workers) < self.n_workers:
            try:
                self.start_worker()
            except Exception as exc:
                self._count_start_failure(f"starting it raised {type(exc).__name__}: {exc}")
                with self.lock:
                    wanted = self.broken is None

    def _count_start_failure(self, what: str) -> None:
        self.start_failures += 1
        _logger.warning("A ProcessExecutor worker could not start: %s.", what)
        if self.start_failures >= _MAX_START_FAILURES:
            with self.lock:
                self.broken = (
                    f"The worker processes of the ProcessExecutor fail to start "
                    f"({_MAX_START_FAILURES} times in a row; last time {what}), so the "
                    f"executor stopped. See the workers' error output above. With the "
                    f"'spawn' or 'forkserver' start method a script that uses the executor "
                    f'must keep its main code under `if __name__ == "__main__":`.'
                )

    def _dispatch(self) -> None:
        with self.lock:
            swept: list[_WorkItem] = []
            if self.cancel_seen:
                self.cancel_seen = False
                swept = [i for i in self.pending if not i.started and i.future.cancelled()]
                if swept:
                    self.pending = deque(i for i in self.pending if i not in swept)
        for item in swept:
            _notify_cancelled(item.future)

        idle = [w for w in self.workers if w.ready and w.item is None and not w.retiring]
        while idle:
            with self.lock:
                if not self.pending:
                    return
                item = self.pending.popleft()
            worker = idle[-1]
            previous, item.future.worker = item.future.worker, worker.worker_id
            if not item.started:
                if not item.future.set_running_or_notify_cancel():
                    item.future.worker = previous
                    continue
                item.started = True
            idle.pop()
            worker.item = item
            try:
                worker.conn.send_bytes(item.payload)
                item.payload = b""  # the worker has it; free the memory
            except OSError:
                # The worker died after it became idle; its sentinel fires soon. The
                # task never reached it, so it goes back to the front of the queue.
                worker.item = None
                worker.retiring = True
                with contextlib.suppress(Exception):
                    worker.process.kill()
                with self.lock:
                    self.pending.appendleft(item)

    def _receive(self, worker: _Worker) -> None:
        try:
            data = worker.conn.recv_bytes()
        except (EOFError, OSError):
            self._reap(worker)
            return
        self._handle_message(worker, data)

    def _handle_message(self, worker: _Worker, data: bytes) -> None:
        if not worker.ready:
            worker.ready = True
            self.start_failures = 0
            return
        if data.startswith(_CALL):
            with contextlib.suppress(OSError):  # a broken pipe: the sentinel fires soon
                worker.conn.send_bytes(_answer_call(data))
            return
        item, worker.item = worker.item, None
        if item is None or worker.retiring:
            return  # the reply of a task that was killed on request
        try:
            reply = pickle.loads(data)
        except Exception as exc:
            _set_exception(
                item.future,
                RuntimeError(
                    f"The result of task {item.name} could not be unpickled in the driver "
                    f"process ({type(exc).__name__}: {_safe_str(exc)}). Everything the "
                    f"task returns must be importable in the driver process too."
                ),
            )
            return
        del data
        if reply[0] == _OK:
            _set_result(item.future, reply[1])
        elif reply[0] == _RAISED:
            raised: BaseException = reply[1]
            raised.__cause__ = _RemoteTraceback(reply[2])
            _set_exception(item.future, raised)
        else:
            _set_exception(item.future, RuntimeError(reply[1]))

    def _reap(self, worker: _Worker) -> None:
        """Clean up after a worker whose process ended or whose pipe broke."""
        with contextlib.suppress(EOFError, OSError):
            while worker.item is not None and worker.conn.poll():  # a reply sent in time
                self._handle_message(worker, worker.conn.recv_bytes())
        process = worker.process
        pid = process.pid
        process.join(timeout=1.0)
        if process.exitcode is None:  # the pipe broke but the process lives on
            process.kill()
            process.join(timeout=5.0)
        exitcode = process.exitcode
        with self.lock:
            self.workers.remove(worker)
            stopping = self.shutdown_requested or self.terminate_requested
        worker.conn.close()
        if exitcode is not None:
            process.close()
        item, worker.item = worker.item, None
        how = _describe_exit(exitcode)
        if item is not None:
            message = (
                f"worker process {pid} on {_HOSTNAME} {how} while running task "
                f"{item.name}; the task did not finish. Only this task failed: the other "
                f"tasks go on and a replacement worker was started.{_crash_hint(exitcode)}"
            )
            _logger.warning("%s", message)
            _set_exception(item.future, WorkerCrashedError(message))
        elif not worker.retiring and not stopping:
            if worker.ready:
                _logger.warning(
                    "Idle worker process %s %s; a replacement worker was started.",
                    pid,
                    how,
                )
            else:
                self._count_start_failure(f"worker process {pid} {how}")

    def _serve_kill_requests(self) -> None:
        with self.lock:
            requests, self.kill_requests = self.kill_requests, []
        for request in requests:
            try:
                request.killed = self._kill_task(request.future)
            finally:
                request.done.set()

    def _kill_task(self, future: Future[Any]) -> bool:
        if future.done():
            return False
        for worker in self.workers:
            if worker.item is not None and worker.item.future is future:
                worker.item = None
                worker.retiring = True
                with contextlib.suppress(Exception):
                    worker.process.kill()
                _set_exception(
                    future,
                    CancelledError(
                        f"The task was cancelled while running, by killing its worker "
                        f"process {worker.worker_id}; a replacement worker was started."
                    ),
                )
                return True
        with self.lock:
            queued = [item for item in self.pending if item.future is future]
            for item in queued:
                self.pending.remove(item)
        if not queued:
            return False
        if not future.cancel():  # it had been sent to a worker that was dead already
            _set_exception(future, CancelledError("The task was cancelled before it ran."))
        return True

    def _stop_workers(self) -> list[_WorkItem]:
        """Stop every worker; return the items of the tasks this interrupted."""
        with self.lock:
            graceful = not self.terminate_requested and self.broken is None
            workers = list(self.workers)
        for worker in workers:
            if graceful and worker.ready and worker.item is None:
                with contextlib.suppress(OSError):
                    worker.conn.send_bytes(_STOP)
            else:
                with contextlib.suppress(Exception):
                    worker.process.kill()
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        for worker in workers:
            process = worker.process
            with contextlib.suppress(ValueError):
                process.join(timeout=max(0.0, deadline - time.monotonic()))
                if process.exitcode is None:
                    process.kill()
                    process.join(timeout=5.0)
                if process.exitcode is not None:
                    process.close()
            worker.conn.close()
        with self.lock:
            self.workers.clear()
        return [worker.item for worker in workers if worker.item is not None]

    def _fail_remaining(self, interrupted: list[_WorkItem]) -> None:
        with self.lock:
            self.closed = True
            items = interrupted + list(self.pending)
            self.pending.clear()
            requests, self.kill_requests = self.kill_requests, []
            reason = self.broken or (
                "The ProcessExecutor was terminated (the interpreter is exiting) before "
                "the task finished."
            )
        for request in requests:
            request.done.set()
        for item in items:
            if item.future.cancelled():
                _notify_cancelled(item.future)
            else:
                _set_exception(item.future, WorkerCrashedError(reason))
        _LIVE_POOLS.discard(self)


_LIVE_POOLS: weakref.WeakSet[_Pool] = weakref.WeakSet()


def _terminate_live_pools() -> None:
    for pool in list(_LIVE_POOLS):
        pool.terminate()


atexit.register(_terminate_live_pools)


class ProcessExecutor(Executor):
    """Run tasks in local worker processes; a dying worker fails only its own task.

    Each worker runs one task at a time. When a worker crashes or is killed (segfault,
    out-of-memory killer, ``os._exit``, SIGKILL), only the task it was running fails,
    with :class:`~twiddle.WorkerCrashedError` naming the exit code or signal; a
    replacement worker starts and every other task goes on. Tasks and results are
    pickled with ``cloudpickle``, so lambdas, closures and functions defined in
    ``__main__`` or in a notebook can be submitted.

    Parameters
    ----------
    n_workers : int
        Number of worker processes, >= 1.
    threads_per_worker : int, default=1
        Upper bound on the BLAS and OpenMP threads of each worker (numpy, scipy,
        scikit-learn, PyTorch), so that ``n_workers`` workers do not oversubscribe the
        cores. Set in the worker's environment before it starts and enforced with
        ``threadpoolctl``.
    mp_context : {"spawn", "fork", "forkserver"} or None, default=None
        :mod:`multiprocessing` start method; None means "spawn", which is safe with
        threads and works the same on every platform. With "spawn" and "forkserver" a
        script must keep its main code under ``if __name__ == "__main__":``.

    Notes
    -----
    ``submit`` returns a :class:`TaskFuture` whose ``worker`` attribute is set to
    ``"hostname:pid"`` of the worker when the task starts.

    An exception raised by a task is raised again by ``future.result()``, with its
    original type and the worker's traceback as ``__cause__``. An exception that cannot
    be pickled becomes a :class:`RuntimeError` holding its traceback text; a result that
    cannot be pickled fails its future with a :class:`RuntimeError`. A task that cannot
    be pickled fails its future with :class:`pickle.PicklingError`. In all these cases
    the worker lives on. A task that raises :class:`SystemExit` or
    :class:`KeyboardInterrupt` ends its worker, like ``os._exit``: its future gets
    :class:`~twiddle.WorkerCrashedError`.

    Call :meth:`shutdown` (or use the executor as a context manager) to stop the
    workers. If the executor is dropped without it, its workers stop once the queued
    tasks are done; at interpreter exit, workers still alive are killed. Workers ignore
    SIGINT (Ctrl-C) and end on their own when the driver process dies.

    Examples
    --------
    >>> with ProcessExecutor(n_workers=2) as executor:  # doctest: +SKIP
    ...     futures = [executor.submit(pow, 2, k) for k in range(4)]
    ...     [f.result() for f in futures]
    [1, 2, 4, 8]
    """

    def __init__(
        self,
        n_workers: int,
        *,
        threads_per_worker: int = 1,
        mp_context: str | None = None,
    ) -> None:
        # Imported here, not at the top, so that worker processes, which import this
        # module to find their entry point, do not pay for numpy on that account.
        from twiddle._validation import check_choice, check_int

        where = "ProcessExecutor"
        n = check_int(n_workers, "n_workers", where, minimum=1)
        threads = check_int(threads_per_worker, "threads_per_worker", where, minimum=1)
        methods = (None, *multiprocessing.get_all_start_methods())
        method = check_choice(mp_context, "mp_context", where, methods)
        self._n_workers = cast(int, n)
        self._threads_per_worker = cast(int, threads)
        self._mp_context: str = method or "spawn"
        context = multiprocessing.get_context(self._mp_context)
        pool = _Pool(self._n_workers, self._threads_per_worker, context)
        try:
            for _ in range(self._n_workers):
                pool.start_worker()
        except BaseException:
            pool.terminate()
            raise
        _LIVE_POOLS.add(pool)
        pool.thread.start()
        self._pool = pool
        finalizer = weakref.finalize(self, pool.shutdown, False, False)
        finalizer.atexit = False  # at exit the workers are killed instead

    def __repr__(self) -> str:
        return (
            f"ProcessExecutor(n_workers={self._n_workers}, "
            f"threads_per_worker={self._threads_per_worker}, "
            f"mp_context={self._mp_context!r})"
        )

    @property
    def n_workers(self) -> int:
        """Number of worker processes the pool keeps running."""
        return self._n_workers

    @property
    def threads_per_worker(self) -> int:
        """Upper bound on BLAS and OpenMP threads in each worker."""
        return self._threads_per_worker

    @property
    def mp_context(self) -> str:
        """The :mod:`multiprocessing` start method of the workers."""
        return self._mp_context

    @property
    def worker_ids(self) -> tuple[str, ...]:
        """``"hostname:pid"`` of each worker process started and not yet reaped."""
        return self._pool.worker_ids()

    def submit(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> TaskFuture[_T]:
        """Schedule ``fn(*args, **kwargs)`` to run in a worker process.

        Parameters
        ----------
        fn : callable
            The task. It, its arguments and everything it closes over must be
            picklable with ``cloudpickle``.
        *args, **kwargs
            Arguments for ``fn``.

        Returns
        -------
        TaskFuture
            Completes with the return value of ``fn``, or with the exception it raised,
            :class:`~twiddle.WorkerCrashedError` if its worker died, or
            :class:`concurrent.futures.CancelledError` if it was cancelled.

        Raises
        ------
        RuntimeError
            If the executor has been shut down.
        WorkerCrashedError
            If worker processes fail to start, so the executor stopped.
        """
        name = _describe_callable(fn)
        future: TaskFuture[_T] = TaskFuture()
        with self._pool.lock:
            if self._pool.broken is not None:
                raise WorkerCrashedError(self._pool.broken)
            if self._pool.shutdown_requested or self._pool.terminate_requested:
                raise RuntimeError("cannot schedule new futures after shutdown")
        try:
            payload = cloudpickle.dumps((fn, args, kwargs))
        except Exception as exc:
            error = pickle.PicklingError(
                f"ProcessExecutor could not pickle task {name} to send it to a worker "
                f"process ({type(exc).__name__}: {_safe_str(exc)}). The callable, its "
                f"arguments and the variables it uses must be picklable with cloudpickle; "
                f"create open files, locks, connections and clients inside the task."
            )
            error.__cause__ = exc
            future.set_exception(error)
            return future
        self._pool.put(_WorkItem(future, payload, name))
        return future

    def kill_running(self, future: Future[Any]) -> bool:
        """Cancel a task even while it runs, by killing its worker process.

        A queued task is simply cancelled. A running task's worker is killed with
        SIGKILL and replaced; the future then raises
        :class:`concurrent.futures.CancelledError` from ``result()``. (Its ``cancelled()``
        stays False, because a running future cannot enter the cancelled state.)

        Parameters
        ----------
        future : Future
            A future returned by this executor's :meth:`submit`.

        Returns
        -------
        bool
            True if the task was cancelled or killed by this call; False if it had
            finished already or does not belong to this executor.
        """
        if future.cancel():
            return True
        if future.done():
            return False
        return self._pool.kill(future)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting tasks, finish the queued ones, then stop the workers.

        Each worker gets a stop message and a grace period of one second to exit, after
        which it is killed; every worker process is reaped (no zombies).

        Parameters
        ----------
        wait : bool, default=True
            Block until all tasks are done and the workers have exited.
        cancel_futures : bool, default=False
            Cancel the tasks that have not started yet. Running tasks always finish;
            use :meth:`kill_running` to stop them.
        """
        self._pool.shutdown(wait, cancel_futures)


class InlineExecutor(Executor):
    """Run each task synchronously, inside ``submit``, in the calling thread.

    It lets the driver treat ``n_jobs=1`` through the same Executor interface as the
    process pool. An exception raised by the task is stored in the returned future;
    :class:`KeyboardInterrupt` and :class:`SystemExit` are not stored: they propagate
    out of ``submit``, so that Ctrl-C stops the study.

    Examples
    --------
    >>> executor = InlineExecutor()
    >>> executor.submit(pow, 2, 10).result()
    1024
    """

    def __init__(self) -> None:
        self._shutdown = False

    def __repr__(self) -> str:
        return "InlineExecutor()"

    def submit(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> TaskFuture[_T]:
        """Run ``fn(*args, **kwargs)`` now and return its completed future.

        Returns
        -------
        TaskFuture
            Done already; its ``worker`` is ``"hostname:pid"`` of this process.

        Raises
        ------
        RuntimeError
            If the executor has been shut down.
        """
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        future: TaskFuture[_T] = TaskFuture()
        future.worker = f"{_HOSTNAME}:{os.getpid()}"
        future.set_running_or_notify_cancel()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting tasks. Nothing runs in the background, so nothing waits."""
        self._shutdown = True
