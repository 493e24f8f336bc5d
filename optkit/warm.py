"""Warm starts for worker processes: a server that imports the libraries a worker needs (torch, transformers'
model code) and optkit's worker modules once (`python -m optkit.warm LIBRARY...`: a fresh process that computes
nothing and never touches a GPU), then forks one child per request; each variant skips those imports, about 5
CPU-seconds on a 2-core machine.

The child is made what a fresh `python -m module args` would be: a session of its own (its group can be killed),
SIGTERM when its parent dies, output into the log, the caller's environment and argv, the module run as __main__,
its exit functions run, its exit status reported. It never imports the caller's main module (multiprocessing's
forkserver would, and a user's script without a main guard would run again). The server serves the environment it
started in (libraries read some variables on import): a request with another one, or one that needs a library the
server has not imported, starts a new server. One request at a time (a second one meanwhile gets a fresh process);
OPTKIT_WARM_START=0 switches warm starts off.

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

_state: dict = {}
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
        try:
            server.stdin.write(json.dumps({"module": module, "args": args, "log": str(log), "env": env}) + "\n")
            server.stdin.flush()
        except OSError:
            _stop()
            return None
        pid, code, timed_out = None, None, False
        try:
            pid = _answer(server, deadline)
            if pid is not None:
                code = _answer(server, deadline)
            if code is None:  # past its time (or the server gone): the child's group, then its exit status
                timed_out = deadline is not None and time.perf_counter() >= deadline
                if pid is None:
                    _stop()  # the child, if forked yet, dies with the server (its parent-death signal)
                else:
                    _kill(pid)
                    code = _answer(server, None)
        except BaseException:  # Ctrl-C, SystemExit (SIGTERM): nothing of the variant lives on
            if pid is not None and code is None:
                _kill(pid)
            elif pid is not None:
                kill_group(pid)
            _stop()
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


def _server(env: dict, libraries: tuple[str, ...]):
    if sys.platform != "linux" or env.get("OPTKIT_WARM_START", "1") == "0":
        return None
    proc, have = _state.get("proc"), _state.get("libraries", ())
    if proc is not None and proc.poll() is None and _state["env"] == env and set(libraries) <= set(have):
        return proc
    _stop()  # gone, another environment than the one it imported its libraries under, or a library short
    from optkit.isolate import die_with_parent

    _state["libraries"] = tuple(dict.fromkeys(have + libraries)) if _state.get("env") == env else libraries
    _state["env"], _state["buffer"] = env, b""
    _state["proc"] = subprocess.Popen(
        [sys.executable, "-m", "optkit.warm", *_state["libraries"]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        env=env, text=True,
        start_new_session=True,  # Ctrl-C reaches the caller, which ends the child's group itself
        preexec_fn=die_with_parent)
    return _state["proc"]


def _stop() -> None:
    proc = _state.pop("proc", None)
    if proc is not None:
        proc.kill()
        proc.wait()


def _answer(server, deadline: float | None) -> int | None:
    """The server's next line as an int; None past the deadline or when the server is gone."""
    fd = server.stdout.fileno()
    while b"\n" not in _state["buffer"]:
        left = None if deadline is None else deadline - time.perf_counter()
        if left is not None and left <= 0:
            return None
        if not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            _stop()
            return None
        _state["buffer"] += chunk
    line, _state["buffer"] = _state["buffer"].split(b"\n", 1)
    return int(line)


def _child(request: dict) -> None:
    """The forked child: becomes the fresh process the request describes, runs the module, exits."""
    import atexit
    import runpy
    import traceback

    from optkit.isolate import orphan_signal

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
    """The libraries and what optkit's worker imports (not the worker itself: each child runs it as __main__),
    with the libraries' import-time notices silenced as the worker silences them."""
    import importlib

    from optkit.errors import quiet_libraries

    quiet_libraries()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)  # torchao prints "Failed to load ..." for kernels a CPU cannot use, on import
    try:
        for name in [*libraries, "optkit.executors.nodelock", "optkit.faults", "optkit.job", "optkit.progress"]:
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
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            _child(json.loads(line))
        os.write(1, f"{pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        os.write(1, f"{os.waitstatus_to_exitcode(status)}\n".encode())


if __name__ == "__main__":
    serve(sys.argv[1:])
