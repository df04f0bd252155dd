"""The ``warmstart`` Jupyter kernel: ipykernel with the cyclic garbage collector tuned for short batch processes.

Every DVC stage is a notebook run in a fresh kernel, and most of them import
torch and transformers (a heap of about a million objects) for a minute of
work. With CPython's default thresholds the collector runs full collections
over that growing heap again and again while the imports happen, and once more
over all of it while the interpreter exits. Measured on the 2-core CPU VM
(torch 2.13.0, transformers 5, the pretrain stage's imports): the imports take
7.2-9.9 s with the default thresholds and 5.0-6.3 s with a first-generation
threshold of 10,000; a process that imported them takes 1.6 s to exit, 0.25 s
when its objects are frozen out of the final collection. That is about 3 s a
notebook, and the default study runs 31.

:func:`tune_gc` does both: a larger first-generation threshold (the collector
still runs, less often; what it frees is the same) and ``gc.freeze()`` as the
last exit handler (objects still alive at exit are not traversed once more;
CPython never promised to finalise them, and every file the project writes is
closed by a ``with`` block or an explicit ``close``). The spawned workers of
:func:`warmstart.pool.process_pool` call it too.

``python -m warmstart.notebook.kernel install [--name warmstart]`` registers the kernel
spec in ``sys.prefix`` (what ``make env`` runs); the spec starts ``python -m
warmstart.notebook.zygote -f {connection_file}``, which forks the kernel from a server that imported the
heavy packages once (:mod:`warmstart.notebook.zygote`) or, with no server, runs :func:`main` here.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import sys
from pathlib import Path

GEN0_THRESHOLD = 10_000  # CPython's default: 700 allocations minus deallocations between first-generation collections
_tuned = False


def tune_gc(gen0: int = GEN0_THRESHOLD) -> None:
    """Raise the first-generation threshold to ``gen0`` (the older generations' stay) and freeze every object
    at exit, once per process."""
    global _tuned
    if gen0 < 1:
        raise ValueError(f"gen0 must be a positive allocation count, got {gen0}")
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(gen0, g1, g2)
    if not _tuned:
        atexit.register(gc.freeze)  # registered first, so it runs after every later exit handler
        _tuned = True


def install(name: str = "warmstart", display_name: str = "Python (warmstart)", prefix: str | None = None) -> Path:
    """Register the kernel spec (ipykernel's, started through this module); returns the spec's directory."""
    from ipykernel.kernelspec import install as ipk_install

    path = Path(ipk_install(kernel_name=name, display_name=display_name, prefix=prefix or sys.prefix))
    spec_file = path / "kernel.json"
    spec = json.loads(spec_file.read_text())
    argv = spec["argv"]
    if "ipykernel_launcher" not in argv:
        raise RuntimeError(f"{spec_file}: ipykernel wrote an argv without ipykernel_launcher: {argv}")
    spec["argv"] = ["warmstart.notebook.zygote" if a == "ipykernel_launcher" else a for a in argv]
    spec_file.write_text(json.dumps(spec, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["install"]:
        ap = argparse.ArgumentParser(
            prog="python -m warmstart.notebook.kernel install", description="register the kernel spec"
        )
        ap.add_argument("--name", default="warmstart")
        ap.add_argument("--display-name", default="Python (warmstart)")
        ap.add_argument("--prefix", default=None, help="default: this interpreter's sys.prefix")
        a = ap.parse_args(args[1:])
        print(install(a.name, a.display_name, a.prefix))
        return
    tune_gc()
    if sys.path and (sys.path[0] == "" or Path(sys.path[0]) == Path.cwd()):
        del sys.path[0]  # as ipykernel_launcher: the kernel's own imports never come from the cwd (added back later)
    from ipykernel import kernelapp

    kernelapp.launch_new_instance(argv=args)


if __name__ == "__main__":
    main()
