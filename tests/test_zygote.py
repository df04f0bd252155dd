"""The kernel fork server (warmstart.notebook.zygote): a forked kernel runs the same cell to the same result as a
plain kernel, with the client's directory and environment, and the server's imports already done."""

import json
import os
import subprocess
import sys

import pytest

from warmstart.notebook.bench import wait_for_server
from warmstart.notebook.zygote import ENV_SWITCH, server_key, socket_path

CELL = """import json, os, sys
preloaded = "torch" in sys.modules
import torch
g = torch.Generator().manual_seed(7)
x = torch.randn(64, 64, generator=g)
value = float((x @ x.T).logsumexp(dim=1).sum())
json.dump({"preloaded": preloaded, "value": value, "cwd": os.getcwd(), "marker": os.environ.get("WARMSTART_TEST_MARKER"),
           "warmstart_file": __import__("warmstart.notebook.kernel").notebook.kernel.__file__}, open("out.json", "w"))
"""


def test_key_ignores_what_varies_between_stages_and_follows_the_rest():
    base = {"PATH": "/usr/bin", "HOME": "/root"}
    key = server_key(base)
    assert server_key({**base, "JPY_PARENT_PID": "12", "DVC_STAGE": "x", "WARMSTART_ZYGOTE": "1", "PWD": "/a"}) == key
    assert server_key({**base, "OMP_NUM_THREADS": "1"}) != key  # read by torch at import: another server
    assert socket_path(key).name == f"warmstart-zygote-{os.getuid()}-{key}.sock"


def _run(tmp_path, name, zygote: bool):
    import nbformat

    work = tmp_path / name
    work.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(CELL)]
    nb.metadata["kernelspec"] = {"name": "warmstart", "display_name": "warmstart", "language": "python"}
    nbformat.write(nb, work / "in.ipynb")
    env = {**os.environ, ENV_SWITCH: "1" if zygote else "0", "WARMSTART_TEST_MARKER": name}
    cmd = [
        sys.executable,
        "-m",
        "warmstart.notebook.run",
        "-k",
        "warmstart",
        "--cwd",
        str(work),
        "in.ipynb",
        "out.ipynb",
    ]
    subprocess.run(cmd, cwd=work, env=env, check=True, capture_output=True, timeout=300)
    return json.loads((work / "out.json").read_text())


@pytest.mark.slow
def test_forked_kernel_matches_a_plain_one(tmp_path):
    plain = _run(tmp_path, "plain", zygote=False)
    _run(tmp_path, "first", zygote=True)  # no server yet for this environment: it starts one, runs plainly
    assert wait_for_server(timeout=240), "the fork server did not come up"
    forked = _run(tmp_path, "forked", zygote=True)
    assert not plain["preloaded"] and forked["preloaded"]  # the server's imports were inherited
    assert forked["value"] == plain["value"]  # bit for bit
    assert forked["cwd"] == str(tmp_path / "forked") and forked["marker"] == "forked"  # the client's, not the server's
    assert forked["warmstart_file"] == plain["warmstart_file"]  # the project's code, imported from disk


def test_a_server_that_closes_on_the_client_means_a_plain_kernel(tmp_path):
    """A server that exits while a request waits (its idle deadline) answers nothing: the client falls back."""
    import socket
    import threading

    from warmstart.notebook.zygote import _forked_kernel

    path = tmp_path / "z.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def accept_and_close():
        conn, _ = listener.accept()
        conn.close()

    t = threading.Thread(target=accept_and_close)
    t.start()
    assert _forked_kernel(path, ["-f", "x.json"]) is None
    t.join()
    listener.close()
    assert _forked_kernel(tmp_path / "none.sock", []) is None  # no server at all
