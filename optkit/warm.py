"""Warm starts for worker processes: a server that imports the libraries a worker needs once (torch,
transformers' model code, the worker's own modules: the caller names them; `python -m optkit.warm LIBRARY...`, a
fresh process that computes nothing and never touches a GPU), then forks one child per request; each variant
skips those imports, about 5 CPU-seconds on a 2-core machine.

The child is made what a fresh `python -m module args` would be: a session of its own (its group can be killed),
SIGTERM when its parent dies, output into the log, the caller's environment and argv, the module run as __main__,
its exit functions run, its exit status reported, and the libraries' file pages mapped again (a fork leaves them
out of the child's resident set, so its peak memory would read ~90 MB low; _file_pages). It never imports the
caller's main module (multiprocessing's forkserver would, and a user's script without a main guard would run
again). The server serves the environment it started in (libraries read some variables on import) and exactly the
libraries it was asked for: one per set of libraries (a llama.cpp worker's peak memory must not hold transformers,
which it never imports), restarted for another environment; it lives as long as the caller's process. One request
at a time (a second one meanwhile gets a fresh process); OPTKIT_WARM_START=0 switches warm starts off.

Protocol, one line each: the caller writes a request as JSON; the server answers the child's pid, then its exit
code (negative: the signal that killed it)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

_busy = threading.Lock()


def run(module: str, args: list[str], log: Path, timeout: float | None, env: dict | None, append: bool,
        started: float, libraries: tuple[str, ...]):
    """An isolate.Outcome for `module args` forked from the warm server, or None where a warm start cannot be had
    (off, not Linux, the server busy or gone): the caller then starts a fresh process."""
    from optkit.isolate import Outcome, kill_group

    env = dict(os.environ if env is None else env)
    if not _busy.acquire(blocking=False):
        return None
    try:
        server = _server(env, libraries)
        if server is None:
            return None
        if not append:
            log.write_text("")  # as a fresh start opens its log
        deadline = None if timeout is None else started + timeout
        if not server.ask({"module": module, "args": args, "log": str(log), "env": env}):
            return None
        pid, code, timed_out = None, None, False
        try:
            pid = server.answer(deadline)
            if pid is not None:
                code = server.answer(deadline)
            if code is None:  # past its time (or the server gone): the child's group, then its exit status
                timed_out = deadline is not None and time.perf_counter() >= deadline
                if pid is None:
                    server.stop()  # the child, if forked yet, dies with the server (its parent-death signal)
                else:
                    _kill(pid)
                    code = server.answer(None)
        except BaseException:  # Ctrl-C, SystemExit (SIGTERM): nothing of the variant lives on
            if pid is not None and code is None:
                _kill(pid)
            elif pid is not None:
                kill_group(pid)
            server.stop()
            raise
        if pid is not None:
            kill_group(pid)  # whatever it left running
        if code is None:
            code = -signal.SIGKILL
        return Outcome(code, time.perf_counter() - started, timed_out)
    finally:
        _busy.release()


def _kill(pid: int) -> None:
    """The child's group and the child itself (not reaped yet, so the pid is still its own), in case it was
    killed before it made its own group."""
    from optkit.isolate import kill_group

    kill_group(pid)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class _Server:
    """One server: its process, the environment and libraries it imported them under, what it said so far."""

    def __init__(self, env: dict, libraries: tuple[str, ...]):
        from optkit.isolate import die_with_parent

        self.env, self.libraries, self.buffer = env, libraries, b""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "optkit.warm", *libraries], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=env, text=True,
            start_new_session=True,  # Ctrl-C reaches the caller, which ends the child's group itself
            preexec_fn=die_with_parent)

    def ask(self, request: dict) -> bool:
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            return True
        except OSError:
            self.stop()
            return False

    def answer(self, deadline: float | None) -> int | None:
        """The server's next line as an int; None past the deadline or when the server is gone."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            left = None if deadline is None else deadline - time.perf_counter()
            if left is not None and left <= 0:
                return None
            if not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                self.stop()
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return int(line)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        if _servers.get(self.libraries) is self:
            del _servers[self.libraries]


_servers: dict[tuple[str, ...], _Server] = {}


def _server(env: dict, libraries: tuple[str, ...]) -> _Server | None:
    """The server with exactly these libraries (a worker's peak memory must not hold libraries it would not have
    imported) under this environment, started where there is none."""
    if sys.platform != "linux" or env.get("OPTKIT_WARM_START", "1") == "0":
        return None
    server = _servers.get(libraries)
    if server is not None and server.proc.poll() is None and server.env == env:
        return server
    if server is not None:
        server.stop()  # gone, or another environment than the one it imported its libraries under
    server = _servers[libraries] = _Server(env, libraries)
    return server


def _file_pages() -> list[tuple[int, int]]:
    """(address, length) of the runs of file-backed pages mapped in this process (the libraries' code and data it
    touched while importing them). A fork does not copy those page-table entries, so a child's resident set would
    start ~90 MB (torch, transformers) below a fresh process's, and its peak-memory figure with it: the child maps
    them again (_map_again)."""
    import numpy as np

    page, runs = os.sysconf("SC_PAGE_SIZE"), []
    with open("/proc/self/maps") as maps, open("/proc/self/pagemap", "rb") as pagemap:
        for line in maps:
            parts = line.split()
            if len(parts) < 6 or not parts[5].startswith("/") or "r" not in parts[1]:
                continue
            low, high = (int(x, 16) for x in parts[0].split("-"))
            pagemap.seek(low // page * 8)
            present = (np.frombuffer(pagemap.read((high - low) // page * 8), dtype="<u8") >> np.uint64(63)).astype(bool)
            edges = np.flatnonzero(np.diff(np.concatenate(([False], present, [False])).astype(np.int8)))
            runs += [(low + int(a) * page, int(b - a) * page) for a, b in zip(edges[::2], edges[1::2])]
    return runs


def _map_again(runs: list[tuple[int, int]]) -> None:
    """Map the parent's file-backed pages in this child, as a fresh process that imported the same libraries has
    them: madvise(MADV_POPULATE_READ) per run, else a read of each page."""
    import ctypes

    libc, page = ctypes.CDLL(None, use_errno=True), os.sysconf("SC_PAGE_SIZE")
    for address, length in runs:
        if libc.madvise(ctypes.c_void_p(address), ctypes.c_size_t(length), 22) != 0:  # MADV_POPULATE_READ
            for at in range(address, address + length, page):
                ctypes.string_at(at, 1)


def _child(request: dict, runs: list[tuple[int, int]]) -> None:
    """The forked child: becomes the fresh process the request describes, runs the module, exits."""
    import atexit
    import runpy
    import traceback

    from optkit.isolate import orphan_signal

    _map_again(runs)
    os.setsid()
    orphan_signal()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    fd = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [request["module"], *request["args"]]
    code = 0
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _preload(libraries: list[str]) -> None:
    """The libraries, with their import-time notices silenced as the worker silences them."""
    import importlib

    from optkit.errors import quiet_libraries

    quiet_libraries()
    # were an import to ask whether CUDA is there, NVML answers, not the CUDA runtime: a CUDA runtime set up in the
    # server would be unusable in its children (each child gets the caller's environment back)
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)  # torchao prints "Failed to load ..." for kernels a CPU cannot use, on import
    try:
        for name in libraries:
            try:
                importlib.import_module(name)
            except ImportError:
                pass  # a child imports what it needs itself, and fails there, in its log, if it cannot
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def serve(libraries: list[str]) -> None:
    _preload(libraries)
    try:
        runs = _file_pages()
    except (OSError, ImportError, ValueError):
        runs = []
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            _child(json.loads(line), runs)
        os.write(1, f"{pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        os.write(1, f"{os.waitstatus_to_exitcode(status)}\n".encode())


if __name__ == "__main__":
    serve(sys.argv[1:])
