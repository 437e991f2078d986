"""Reading the HTML report pages back in tests: their tables as text, their images decoded, their references."""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from PIL import Image


@dataclass
class Page:
    text: str
    tables: dict[str, list[list[str]]] = field(default_factory=dict)  # table id -> body rows of cell texts
    row_images: dict[str, list[int]] = field(default_factory=dict)  # table id -> images per body row
    images: list[str] = field(default_factory=list)  # every <img> src
    links: list[str] = field(default_factory=list)  # every <a> href


class _Parser(HTMLParser):
    def __init__(self, page: Page):
        super().__init__(convert_charrefs=True)
        self.page = page
        self.table: str | None = None
        self.in_body = False
        self.row: list[str] | None = None
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.table = a.get("id")
            if self.table:
                self.page.tables[self.table], self.page.row_images[self.table] = [], []
        elif tag == "tbody":
            self.in_body = True
        elif tag == "tr" and self.table and self.in_body:
            self.row = []
            self.page.row_images[self.table].append(0)
        elif tag == "td" and self.row is not None:
            self.cell = []
        elif tag == "img":
            self.page.images.append(a.get("src", ""))
            if self.row is not None:
                self.page.row_images[self.table][-1] += 1
        elif tag == "a":
            self.page.links.append(a.get("href", ""))
        elif tag == "div" and self.cell is not None:
            self.cell.append(" ")

    def handle_endtag(self, tag):
        if tag == "td" and self.cell is not None and self.row is not None:
            self.row.append(re.sub(r"\s+", " ", "".join(self.cell)).strip())
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.page.tables[self.table].append(self.row)
            self.row = None
        elif tag == "tbody":
            self.in_body = False
        elif tag == "table":
            self.table = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def read_page(path: str | Path) -> Page:
    text = Path(path).read_text(encoding="utf-8")
    page = Page(text=text)
    _Parser(page).feed(text)
    return page


def check_self_contained(page: Page) -> None:
    """No reference to anything outside the file; every image an embedded PNG or JPEG that decodes."""
    lowered = page.text.lower()
    for bad in ("http://", "https://", "<script", "@import", "<link", "<iframe", "<object", "<embed"):
        assert bad not in lowered, f"external reference or script: {bad}"
    for m in re.finditer(r"url\(\s*['\"]?([^'\")]*)", lowered):
        assert m.group(1).startswith("data:"), m.group(0)
    for m in re.finditer(r"""\ssrc\s*=\s*["']?([^"'\s>]*)""", page.text):
        assert m.group(1).startswith("data:"), m.group(1)[:60]
    for href in page.links:
        assert re.fullmatch(r"[A-Za-z0-9._-]+\.html", href), href  # sibling pages only
    for src in page.images:
        decode_image(src)


def decode_image(src: str) -> Image.Image:
    m = re.fullmatch(r"data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)", src)
    assert m, src[:60]
    image = Image.open(io.BytesIO(base64.b64decode(m.group(2), validate=True)))
    image.load()
    assert image.format == m.group(1).upper() and image.width > 0 and image.height > 0
    return image
