"""The Debian Administrator's Handbook as a parallel corpus.

Debian packages the book as ``debian-handbook``: one HTML page per section,
~25 translations with identical file names, so chapters are parallel across
languages. We fetch the .deb with ``apt-get download`` at run time (its text is
never committed), stream the HTML out of it with ``dpkg-deb --fsys-tarfile``
(nothing is unpacked to disk) and turn each page into clean paragraphs:
navigation, banners and index anchors dropped; code blocks (``<pre>``) kept as
their own paragraphs, marked ``code``, so a param can keep or drop them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from bs4 import BeautifulSoup, XMLParsedAsHTMLWarning

PACKAGE = "debian-handbook"
HTML_ROOT = "usr/share/doc/debian-handbook/html"
# The languages of debian-handbook 11.20220922 (Debian 12), as `available_languages` reads them:
# what `python -m warmstart.config check` offers before any .deb is fetched. The corpus stage
# still checks the real package (read_html), so a newer version with other languages fails there.
LANGUAGES = (
    "ar-MA",
    "ca-ES",
    "cs-CZ",
    "da-DK",
    "de-DE",
    "el-GR",
    "en-US",
    "es-ES",
    "fa-IR",
    "fr-FR",
    "hr-HR",
    "id-ID",
    "it-IT",
    "ja-JP",
    "ko-KR",
    "nb-NO",
    "nl-NL",
    "pl-PL",
    "pt-BR",
    "ro-RO",
    "ru-RU",
    "sv-SE",
    "tr-TR",
    "vi-VN",
    "zh-CN",
    "zh-TW",
)
_WS = re.compile(r"\s+")


class HandbookError(RuntimeError):
    """The handbook package could not be fetched or read."""


@dataclass(frozen=True)
class Paragraph:
    text: str
    kind: str  # "text" | "code"


@dataclass(frozen=True)
class Page:
    page: str  # file name without .html, identical across languages
    chapter: str  # the chapter (or appendix, preface) page this section belongs to
    title: str
    paragraphs: tuple[Paragraph, ...]


def cache_dir() -> Path:
    root = os.environ.get("WARMSTART_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "warmstart"
    )
    path = Path(root, "debs")
    path.mkdir(parents=True, exist_ok=True)
    return path


def deb_version(deb: Path) -> str:
    out = _run(["dpkg-deb", "--field", str(deb), "Version"], f"read the version of {deb}")
    return out.strip()


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> str:
    if shutil.which(cmd[0]) is None:
        raise HandbookError(f"cannot {what}: `{cmd[0]}` is not installed (a Debian system is needed)")
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise HandbookError(f"cannot {what}: `{' '.join(cmd)}` failed:\n{proc.stderr.strip()}")
    return proc.stdout


def fetch(version: str | None = None, deb_path: str | None = None) -> Path:
    """Path of the handbook .deb: the given file, or a cached `apt-get download`."""
    if deb_path:
        deb = Path(deb_path)
        if not deb.is_file():
            raise HandbookError(f"corpus.sources[handbook].deb_path does not exist: {deb}")
        return deb
    cache = cache_dir()
    pattern = f"{PACKAGE}_{version}_all.deb" if version else f"{PACKAGE}_*_all.deb"
    spec = f"{PACKAGE}={version}" if version else PACKAGE
    if not version:
        # ask apt which version it would fetch, so a newer candidate is not masked by the cache
        policy = subprocess.run(["apt-cache", "policy", PACKAGE], capture_output=True, text=True).stdout
        m = re.search(r"Candidate:\s*(\S+)", policy)
        if m and m.group(1) != "(none)":
            pattern = f"{PACKAGE}_{m.group(1).replace(':', '%3a')}_all.deb"
    hits = sorted(cache.glob(pattern))
    if hits:
        return hits[-1]
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        try:
            _run(["apt-get", "download", spec], f"download {spec}", cwd=Path(tmp))
        except HandbookError as err:
            if "Unable to locate" in str(err) and os.geteuid() == 0:
                _run(["apt-get", "update", "-qq"], "update the apt package lists")
                _run(["apt-get", "download", spec], f"download {spec}", cwd=Path(tmp))
            elif "Unable to locate" in str(err):
                raise HandbookError(f"{err}\nrun `sudo apt-get update` first, or set deb_path") from None
            else:
                raise
        debs = list(Path(tmp).glob("*.deb"))
        if len(debs) != 1:
            raise HandbookError(f"apt-get download {spec} left {len(debs)} .deb files, expected 1")
        final = cache / debs[0].name
        os.replace(debs[0], final)
    return final


def _members(deb: Path):
    """Yield (path, bytes) for every regular file in the .deb's data archive."""
    if shutil.which("dpkg-deb") is None:
        raise HandbookError("cannot read the handbook: `dpkg-deb` is not installed")
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                if member.isfile():
                    fh = tar.extractfile(member)
                    yield member.name.lstrip("./"), fh.read() if fh else b""
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace")
        if proc.wait() != 0:
            raise HandbookError(f"dpkg-deb could not read {deb}: {err.strip()}")


def available_languages(deb: Path) -> list[str]:
    langs = set()
    for name, _ in _members(deb):
        parts = name.split("/")
        if name.startswith(HTML_ROOT + "/") and len(parts) == 7 and parts[-1] == "index.html":
            langs.add(parts[-2])
    return sorted(langs)


def read_html(deb: Path, langs: list[str]) -> dict[str, dict[str, str]]:
    """{lang: {page: html}} for the requested languages; unknown codes are an error."""
    wanted = set(langs)
    pages: dict[str, dict[str, str]] = {}
    seen: set[str] = set()
    for name, data in _members(deb):
        if not name.startswith(HTML_ROOT + "/"):
            continue
        parts = name[len(HTML_ROOT) + 1 :].split("/")
        if len(parts) != 2 or not parts[1].endswith(".html"):
            continue
        lang, fname = parts
        seen.add(lang)
        if lang in wanted:
            pages.setdefault(lang, {})[fname[: -len(".html")]] = data.decode("utf-8")
    missing = sorted(wanted - set(pages))
    if missing:
        raise HandbookError(f"language(s) {missing} are not in {deb.name}; available: {', '.join(sorted(seen))}")
    return pages


def _clean(text: str) -> str:
    return _WS.sub(" ", text).strip()


def parse_page(page: str, html: str) -> Page:
    """Clean paragraphs of one handbook page, in reading order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(html, "lxml")
    up = soup.find("link", rel="up")
    up_href = up.get("href", "") if up else ""
    chapter = page if up_href in ("", "index.html") else up_href[: -len(".html")]
    title = _clean(soup.title.get_text()) if soup.title else page
    for junk in soup.select("#banner, #title, ul.docnav, a.indexterm, div.titlepage"):
        junk.decompose()
    body = soup.body or soup
    # a <pre> inside a paragraph becomes its own code paragraph right after it
    for pre in body.select("div.para pre"):
        pre.find_parent("div", class_="para").insert_after(pre.extract())
    paras: list[Paragraph] = []
    for el in body.find_all(["div", "pre"]):
        if el.name == "pre":
            code = "\n".join(line.rstrip() for line in el.get_text().strip("\n").splitlines())
            if code.strip():
                paras.append(Paragraph(code, "code"))
        elif "para" in (el.get("class") or []) and el.find_parent("div", class_="para") is None:
            text = _clean(el.get_text())
            if text:
                paras.append(Paragraph(text, "text"))
    return Page(page=page, chapter=chapter, title=title, paragraphs=tuple(paras))
