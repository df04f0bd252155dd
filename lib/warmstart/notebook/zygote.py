"""A fork server for stage kernels: the heavy third-party imports are paid once per study, not once per stage.

Every DVC stage runs its notebook in a fresh Jupyter kernel, and most kernels import torch, transformers,
pandas and seaborn before their first line of work: on the 2-core VM that is most of a stage's start-up, paid
again by each of the study's 31 stages. The ``warmstart`` kernel spec starts this module's client
(``python -m warmstart.notebook.zygote -f {connection_file}``). The client asks a server, which imported
those packages once, to fork a kernel for it:

1. The client connects to the server's Unix socket (one server per virtual environment, its installed
   packages and the environment variables that those imports read; see :func:`server_key`) and sends its
   argv, working directory and environment, with its stdin/stdout/stderr as file descriptors.
2. The server forks a waiter, the waiter forks the kernel. The kernel takes the client's descriptors,
   directory and environment (``os.environ`` is replaced, not merged) and starts ipykernel through
   :func:`warmstart.notebook.kernel.main`, as the plain kernel does. The waiter sends the kernel's exit
   status back; the client exits with it.
3. Signals the client receives (jupyter_client interrupts with SIGINT, stops with SIGTERM) go to the
   kernel; a kernel whose client is gone (SIGKILL) exits within a second.

Nothing of ``warmstart`` is imported by the server, so a kernel always runs the code on disk; the server
holds only third-party modules, keyed on the environment that installed them, and exits after
:data:`IDLE_SECONDS` without a request. When no server answers, the client starts one in the background and
runs this kernel itself (the first stage of a study pays the imports as before), so the kernel never
depends on the server. ``WARMSTART_ZYGOTE=0`` turns the server off (a plain kernel every time).

The server imports only; it never runs torch code, so no thread pool exists when it forks (OpenBLAS, which
starts threads at load, re-creates them in the child through its own fork handlers). Numbers do not
depend on it: the smoke pipeline runs through it in the tests, and ``python -m warmstart.notebook.bench``
measures what it saves.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IDLE_SECONDS = 300.0
ENV_SWITCH = "WARMSTART_ZYGOTE"  # "0": no server, a plain kernel every time
ENV_IDLE = "WARMSTART_ZYGOTE_IDLE"  # seconds a server waits for its next request (default IDLE_SECONDS)
# What the server imports before it forks: what a stage kernel needs before its first line of work.
PRELOAD = (
    "numpy",
    "pandas",
    "torch",
    "transformers",
    "transformers.models.llama.modeling_llama",
    "matplotlib.pyplot",
    "seaborn",
    "ipykernel.kernelapp",
    "pydantic",
    "yaml",
)
# Environment variables that differ between stages of one study and that no preloaded package reads at
# import: they stay out of the server's key (the kernel gets the client's values all the same).
_VOLATILE = ("JPY_", "DVC_", "PYTEST_", "PYDEVD_", "WARMSTART_", "_", "PWD", "OLDPWD", "SHLVL")
_MAX_MSG = 1 << 20


def server_key(env: dict[str, str] | None = None) -> str:
    """16 hex digits that change with the interpreter, its installed packages and the environment that the
    preloaded imports may read: a server answers only clients whose kernels would import the same."""
    env = dict(os.environ if env is None else env)
    site = [p for p in sys.path if p.endswith("site-packages")]
    stamps = []
    for p in site:
        try:
            stamps.append((p, os.stat(p).st_mtime_ns))  # a package installed or removed changes the folder
        except OSError:
            continue
    stable = {k: v for k, v in env.items() if not k.startswith(_VOLATILE)}
    blob = json.dumps({"exe": sys.executable, "prefix": sys.prefix, "site": stamps, "env": stable}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def socket_path(key: str) -> Path:
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    return base / f"warmstart-zygote-{os.getuid()}-{key}.sock"


# ---------------------------------------------------------------- wire format


def _send(sock: socket.socket, obj: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(obj).encode()
    msg = struct.pack("!I", len(data)) + data
    if fds:
        socket.send_fds(sock, [msg], fds)
    else:
        sock.sendall(msg)


def _recv(sock: socket.socket, nfds: int = 0) -> tuple[dict | None, list[int]]:
    msg, fds, _, _ = socket.recv_fds(sock, _MAX_MSG, nfds) if nfds else (sock.recv(_MAX_MSG), [], 0, None)
    if len(msg) < 4:
        return None, list(fds)
    (n,) = struct.unpack("!I", msg[:4])
    data = msg[4:]
    while len(data) < n:
        more = sock.recv(n - len(data))
        if not more:
            return None, list(fds)
        data += more
    return json.loads(data), list(fds)


# ---------------------------------------------------------------- server


def _preload() -> None:
    import gc
    import importlib

    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")  # as ipykernel sets it
    g0, g1, g2 = gc.get_threshold()
    gc.set_threshold(max(g0, 10_000), g1, g2)  # as the kernel's tune_gc, without importing warmstart code

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
    gc.collect()
    gc.freeze()  # forked children share these pages instead of touching them in their first collection


def _watch_client(pid: int) -> None:
    """In the kernel: exit when the client that stands for it is gone (jupyter_client killed it)."""
    import threading

    def loop() -> None:
        while True:
            time.sleep(0.5)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                continue

    threading.Thread(target=loop, name="zygote-client-watch", daemon=True).start()


def _become_kernel(req: dict, fds: list[int]) -> None:
    for target, fd in zip((0, 1, 2), fds):
        os.dup2(fd, target)
    for fd in fds:
        os.close(fd)
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    sys.argv = [sys.argv[0], *req["argv"]]
    _watch_client(int(req["pid"]))
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    for name in [m for m in sys.modules if m == "warmstart" or m.startswith("warmstart.")]:
        del sys.modules[name]  # the kernel imports the project's code from disk, never the server's copy
    from warmstart.notebook.kernel import main as kernel_main

    code = 0
    try:
        kernel_main(list(req["argv"]))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _handle(conn: socket.socket, listener: socket.socket) -> None:
    """In the waiter (a fork of the server): fork the kernel, wait for it, send its exit status."""
    listener.close()
    try:
        req, fds = _recv(conn, 3)
        if req is None or len(fds) != 3:
            os._exit(2)
        kid = os.fork()
        if kid == 0:
            conn.close()
            _become_kernel(req, fds)
        for fd in fds:
            os.close(fd)
        _send(conn, {"pid": kid})
        _, status = os.waitpid(kid, 0)
        _send(conn, {"exit": os.waitstatus_to_exitcode(status)})
    finally:
        os._exit(0)


def serve(path: Path, idle: float | None = None) -> None:
    """Preload, listen on ``path`` and fork a kernel per request until ``idle`` seconds pass with no kernel
    running and no request."""
    idle = float(os.environ.get(ENV_IDLE, IDLE_SECONDS)) if idle is None else idle
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]  # `python -m` put the start directory first; a plain kernel removes it too
    _preload()
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp))
    os.chmod(tmp, 0o600)
    listener.listen(16)
    os.replace(tmp, path)  # clients see the socket only once the imports are done
    inode = os.stat(path).st_ino
    waiters: set[int] = set()
    last = time.monotonic()
    try:
        while waiters or time.monotonic() - last < idle:
            ready, _, _ = select.select([listener], [], [], 1.0)
            for pid in list(waiters):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    waiters.discard(pid)
                    last = time.monotonic()
            try:
                if os.stat(path).st_ino != inode:
                    break  # another server took the path over
            except FileNotFoundError:
                break
            if not ready:
                continue
            conn, _ = listener.accept()
            pid = os.fork()
            if pid == 0:
                _handle(conn, listener)
            waiters.add(pid)
            conn.close()
    finally:
        listener.close()
        try:
            if os.stat(path).st_ino == inode:
                path.unlink()
        except FileNotFoundError:
            pass


def _start_server(path: Path) -> None:
    """Start a server for ``path`` in the background, detached from this process and its output."""
    subprocess.Popen(
        [sys.executable, "-m", "warmstart.notebook.zygote", "serve", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


# ---------------------------------------------------------------- client


def _forked_kernel(path: Path, argv: list[str]) -> int | None:
    """Run the kernel as a fork of the server at ``path``; its exit code, or None when no server answered."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        return None
    req = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "pid": os.getpid()}
    try:
        _send(sock, req, [0, 1, 2])
        reply, _ = _recv(sock)
    except OSError:  # the server closed while this request waited (its idle exit): run a plain kernel
        reply = None
    if reply is None or "pid" not in reply:
        sock.close()
        return None
    kid = int(reply["pid"])

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(kid, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, forward)
    done = None
    while True:
        try:
            done, _ = _recv(sock)
            break
        except InterruptedError:
            continue
        except OSError:  # the waiter is gone; the kernel, which watches this process, exits when it does
            break
    sock.close()
    return int(done["exit"]) if done and "exit" in done else 1


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["serve"]:
        serve(Path(args[1]))
        return
    if os.environ.get(ENV_SWITCH, "1") != "0":
        path = socket_path(server_key())
        code = _forked_kernel(path, args)
        if code is not None:
            sys.exit(code)
        _start_server(path)  # for the next kernel; this one starts as a plain kernel
    from warmstart.notebook.kernel import main as kernel_main

    kernel_main(args)


if __name__ == "__main__":
    main()
