"""Looking at the report's pages: every page rendered to PNG and the invariants checked.

``python -m warmstart.report check reports/report.pdf [--pages DIR]`` runs :func:`main`.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

from warmstart.describe import ReportError

PAGE_BOUNDS = (3, 40)  # the PDF's page count must lie within these


def page_count(pdf: str | Path) -> int:
    out = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    return int(next(line.split()[-1] for line in out.splitlines() if line.startswith("Pages:")))


def page_text(pdf: str | Path, first: int | None = None, last: int | None = None) -> str:
    cmd = ["pdftotext", "-layout"] + (["-f", str(first)] if first else []) + (["-l", str(last)] if last else [])
    return subprocess.run([*cmd, str(pdf), "-"], capture_output=True, text=True, check=True).stdout


def check_pages(
    pdf: str | Path,
    out_dir: str | Path | None = None,
    bounds: tuple[int, int] = PAGE_BOUNDS,
    summary: bool = True,
    dpi: int = 40,
) -> dict[str, Any]:
    """Render every page to PNG (``pdftoppm``, into ``out_dir`` or a temporary dir) and check the invariants:
    the page count within ``bounds``, one PNG per page, no blank page, and (``summary``) the summary with its
    limitations on page 1 and nothing else. Raises :class:`ReportError` naming what failed; returns
    ``{"pages", "pngs"}`` (the PNG paths, when ``out_dir`` keeps them)."""
    import numpy as np
    from PIL import Image

    n = page_count(pdf)
    if not bounds[0] <= n <= bounds[1]:
        raise ReportError(f"{pdf}: {n} pages, expected {bounds[0]}–{bounds[1]}")
    with tempfile.TemporaryDirectory(prefix="pages-") as tmp:
        out = Path(out_dir or tmp)
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run(["pdftoppm", "-r", str(dpi), "-png", str(pdf), str(out / "page")], check=True)
        pngs = sorted(out.glob("page*.png"))
        if len(pngs) != n:
            raise ReportError(f"{pdf}: pdftoppm rendered {len(pngs)} pages of {n}")
        for p in pngs:
            if np.asarray(Image.open(p).convert("L")).std() <= 1:
                raise ReportError(f"{pdf}: {p.name} is blank")
        kept = [str(p) for p in pngs] if out_dir else []
    if summary:
        first = " ".join(page_text(pdf, 1, 1).split())
        if "Summary" not in first or "Key results" not in first:
            raise ReportError(f"{pdf}: page 1 is not the summary")
        if "Contents" in first:
            raise ReportError(f"{pdf}: the summary does not end on page 1")
    return {"pages": n, "pngs": kept}


def main(argv: list[str] | None = None) -> int:
    """``python -m warmstart.report check reports/report.pdf [--pages DIR]``: the page invariants."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m warmstart.report")
    ap.add_argument("cmd", choices=["check"])
    ap.add_argument("pdf")
    ap.add_argument("--pages", help="keep the page PNGs in this directory")
    ap.add_argument("--no-summary", action="store_true", help="a PDF without the summary page")
    a = ap.parse_args(argv)
    r = check_pages(a.pdf, a.pages, summary=not a.no_summary, dpi=60 if a.pages else 40)
    print(f"{a.pdf}: {r['pages']} pages, invariants hold" + (f"; PNGs in {a.pages}" if a.pages else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
