"""``python -m warmstart.notebook.bench``: what a stage pays before its first line of work, with and without
the kernel fork server (:mod:`warmstart.notebook.zygote`), measured in one run.

Each trial runs a probe notebook through the stages' own command (``python -m warmstart.notebook.run -k
warmstart``, as ``dvc.yaml`` does) from the project root. The probe does what a stage notebook does before its
work: it imports pandas, matplotlib and seaborn and the stage module, reads ``params.yaml``, then writes the
time. *To first line* is from starting the command to that time (papermill's start, the kernel's start, the
imports); *total* is until the command exits (kernel shutdown and the executed copy included). Modes alternate
trial by trial, so load on a shared machine falls on both; the ratio of medians is the result.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from warmstart.notebook.zygote import ENV_SWITCH, server_key, socket_path

PROBE = """import time, pathlib
import pandas as pd
import matplotlib.pyplot as plt
import seaborn as sns
from warmstart.config import load_params
from warmstart.stages import {stage} as stage
params = load_params("params.yaml")
pathlib.Path({mark!r}).write_text(repr(time.time()))
"""


def probe_notebook(path: Path, stage: str, mark: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(PROBE.format(stage=stage, mark=str(mark)))]
    nb.metadata["kernelspec"] = {"name": "warmstart", "display_name": "Python (warmstart)", "language": "python"}
    nbformat.write(nb, path)


def trial(stage: str, zygote: bool, work: Path, kernel: str = "warmstart") -> dict[str, float]:
    mark = work / f"mark-{time.monotonic_ns()}"
    nb, out = work / "probe.ipynb", work / "probe-out.ipynb"
    probe_notebook(nb, stage, mark)
    env = {**os.environ, ENV_SWITCH: "1" if zygote else "0"}
    cmd = [sys.executable, "-m", "warmstart.notebook.run", "-k", kernel, "--no-progress-bar", str(nb), str(out)]
    t0 = time.time()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    total = time.time() - t0
    return {"first_line": float(mark.read_text()) - t0, "total": total}


def wait_for_server(timeout: float = 180.0) -> bool:
    path = socket_path(server_key({**os.environ, ENV_SWITCH: "1"}))
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if path.exists():
            return True
        time.sleep(0.5)
    return False


def measure(stages: list[str], repeats: int) -> dict:
    out: dict = {"stages": {}, "repeats": repeats}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        trial(stages[0], True, work)  # starts the server (this trial runs a plain kernel)
        if not wait_for_server():
            raise RuntimeError("the kernel fork server did not come up within 180 s")
        for stage in stages:
            rows: dict[str, list[dict]] = {"plain": [], "zygote": []}
            for _ in range(repeats):
                for mode in ("plain", "zygote"):
                    rows[mode].append(trial(stage, mode == "zygote", work))
            med = {
                m: {k: statistics.median(r[k] for r in rs) for k in ("first_line", "total")} for m, rs in rows.items()
            }
            out["stages"][stage] = {
                "trials": rows,
                "median": med,
                "ratio_first_line": med["zygote"]["first_line"] / med["plain"]["first_line"],
                "ratio_total": med["zygote"]["total"] / med["plain"]["total"],
            }
    return out


def report(result: dict) -> str:
    from importlib.metadata import version

    from warmstart.hardware import cpu_model, usable_cores

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "lib"], capture_output=True, text=True).stdout.strip()
    pkgs = ", ".join(f"{p} {version(p)}" for p in ("torch", "transformers", "papermill", "ipykernel", "pandas"))
    lines = [
        "# Stage start-up: plain kernel vs kernel fork server",
        "",
        f"- command: `python -m warmstart.notebook.bench --stages {' '.join(result['stages'])} "
        f"--repeats {result['repeats']}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- code: commit {commit or 'unknown'}{' (lib/ modified)' if dirty else ''}",
        f"- machine: {cpu_model()}, {usable_cores()} usable cores, no GPU; Python {sys.version.split()[0]}",
        f"- software: {pkgs}",
        f"- {result['repeats']} trials per mode and stage, modes alternating; medians in seconds",
        "",
        "| stage module | to first line, plain | with fork server | ratio | total, plain | with fork server | ratio |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for stage, r in result["stages"].items():
        p, z = r["median"]["plain"], r["median"]["zygote"]
        lines.append(
            f"| {stage} | {p['first_line']:.2f} | {z['first_line']:.2f} | {r['ratio_first_line']:.2f} "
            f"| {p['total']:.2f} | {z['total']:.2f} | {r['ratio_total']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m warmstart.notebook.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--stages", nargs="+", default=["corpus", "pretrain", "report"], help="stage modules to probe")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, help="write the table (Markdown) and the trials (JSON beside it)")
    a = ap.parse_args(argv)
    result = measure(a.stages, a.repeats)
    text = report(result)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
        a.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
