"""Checks every report test makes on a written report directory: the page parses, every
image it references exists and is a PNG, no value escaped into markup."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

PNG = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "hr", "link", "input"}


class Page(HTMLParser):
    """Tags, image sources, headings and text of one page; fails on unbalanced tags."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.images: list[str] = []
        self.headings: list[tuple[str, str]] = []
        self.text: list[str] = []
        self._open: list[str] = []
        self._heading: list[str] | None = None
        self.feed(text)
        self.close()
        assert not self._open, f"unclosed tags {self._open}"

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag not in VOID:
            self._open.append(tag)
        if tag in ("h1", "h2", "h3", "h4"):
            self._heading = []

    def handle_endtag(self, tag):
        assert self._open and self._open[-1] == tag, f"</{tag}> closes {self._open[-1:]}"
        self._open.pop()
        if tag in ("h1", "h2", "h3", "h4") and self._heading is not None:
            self.headings.append((tag, "".join(self._heading).strip()))
            self._heading = None

    def handle_data(self, data):
        self.text.append(data)
        if self._heading is not None:
            self._heading.append(data)

    def heading_texts(self, tag: str | None = None) -> list[str]:
        return [text for t, text in self.headings if tag is None or t == tag]

    @property
    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())


def check_report_dir(out: Path) -> tuple[Page, dict, str]:
    """(parsed page, metrics.json, raw HTML) after the checks every report must pass."""
    raw = (out / "index.html").read_text()
    page = Page(raw)
    for src in page.images:
        assert "/" not in src and not src.startswith("."), src  # beside the page, nothing outside
        assert (out / src).read_bytes()[:8] == PNG, src
    metrics = json.loads((out / "metrics.json").read_text(), parse_constant=_no_nan)
    return page, metrics, raw


def _no_nan(name):
    raise AssertionError(f"metrics.json holds {name}")
