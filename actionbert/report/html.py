"""HTML page assembly: one self-contained file per page.

Every page carries its own inline CSS and its images as base64 data URIs (PNG charts, JPEG thumbnails); it
references no script, font, stylesheet or URL, so it opens offline and can be sent as one file. Text from the
outside world (file names, class names, messages) goes through `esc`; only `Markup` is inserted as it is.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Iterable, Sequence

GENERATOR = "actionbert report"

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d232a;
 background:#f6f7f9;margin:0}
main{max-width:1220px;margin:0 auto;padding:18px 24px 40px;background:#fff;min-height:100vh;box-sizing:border-box}
h1{font-size:24px;margin:4px 0 6px}h2{font-size:19px;margin:28px 0 8px;border-bottom:1px solid #dde1e6;
 padding-bottom:4px}h3{font-size:16px;margin:18px 0 6px}
p{margin:6px 0 10px}.sub{color:#59636e;margin-top:0}.small{font-size:13px;color:#59636e}
a{color:#0b5cad}code{font-size:13px;background:#f0f2f4;padding:1px 4px;border-radius:3px}
table{border-collapse:collapse;margin:6px 0 14px;font-size:14px}
th,td{border-bottom:1px solid #e3e6ea;padding:4px 10px;text-align:left;vertical-align:middle}
th{background:#f0f2f4;font-weight:600}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.bad td{background:#fff4f2}
img{max-width:100%;height:auto}img.chart{display:block;width:100%}
img.thumb{display:block;border-radius:3px;max-width:none;height:72px;width:auto}.nowrap{white-space:nowrap}
.wide{overflow-x:auto}.path{overflow-wrap:anywhere}
.note{background:#fff8e1;border-left:4px solid #e0a800;padding:6px 10px;margin:8px 0}
.error{background:#fdecea;border-left:4px solid #c62828;padding:6px 10px;margin:8px 0}
.facts td:first-child{color:#59636e;padding-left:0}.facts td{border:none;padding:1px 14px 1px 0}
.strip{display:flex;gap:0;margin-bottom:2px}.strip figure{flex:1 1 0;margin:0 1px;text-align:center}
.strip img{width:100%}.strip figcaption{font-size:11px;color:#59636e}
details summary{cursor:pointer;color:#0b5cad;margin:6px 0}
"""


class Markup(str):
    """Text that already is HTML (built here from escaped parts): inserted as it is."""


def esc(value) -> Markup:
    """`value` as HTML text: escaped, unless it already is `Markup`."""
    return value if isinstance(value, Markup) else Markup(html.escape(str(value)))


def join(parts: Iterable) -> Markup:
    return Markup("".join(esc(p) for p in parts))


def tag(name: str, content="", **attrs) -> Markup:
    """<name attr="..">content</name>; attribute names `cls` -> class, trailing underscores dropped."""
    text = "".join(f' {_attr_name(k)}="{html.escape(str(v))}"' for k, v in attrs.items() if v is not None)
    return Markup(f"<{name}{text}>{esc(content)}</{name}>")


def _attr_name(key: str) -> str:
    return "class" if key == "cls" else key.rstrip("_").replace("_", "-")


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image(data: bytes, *, mime: str, alt: str, cls: str | None = None, width: int | None = None) -> Markup:
    """An embedded image (`mime`: image/png or image/jpeg)."""
    size = f' width="{int(width)}"' if width else ""
    klass = f' class="{html.escape(cls)}"' if cls else ""
    return Markup(f'<img src="{data_uri(data, mime)}" alt="{html.escape(alt)}"{klass}{size}>')


def table(headers: Sequence, rows: Iterable[Sequence], *, id: str | None = None, numeric: Sequence[int] = (),
          row_classes: Sequence[str | None] | None = None) -> Markup:
    """A table; cells are escaped unless `Markup`; columns listed in `numeric` are right-aligned."""
    num = set(numeric)
    head = "".join(tag("th", h, cls="num" if i in num else None) for i, h in enumerate(headers))
    body = []
    for r, row in enumerate(rows):
        klass = row_classes[r] if row_classes else None
        cells = "".join(tag("td", c, cls="num" if i in num else None) for i, c in enumerate(row))
        body.append(tag("tr", Markup(cells), cls=klass))
    return tag("table", Markup(f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody>"), id=id)


def facts(pairs: Iterable[tuple[str, object]]) -> Markup:
    """A small two-column table of name: value facts."""
    return tag("table", Markup("".join(tag("tr", join([tag("td", k), tag("td", v)])) for k, v in pairs)),
               cls="facts")


def para(text, *, cls: str | None = None) -> Markup:
    return tag("p", text, cls=cls)


def section(title: str, *parts, id: str | None = None) -> Markup:
    return tag("section", join([tag("h2", title), *parts]), id=id)


def link(href: str, text) -> Markup:
    """A link to a sibling page of the same report (a relative file name, never a URL)."""
    return tag("a", text, href=href)


def page(title: str, *parts) -> str:
    """A whole HTML document: inline CSS, no external reference."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"generator\" content=\"{GENERATOR}\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n"
            f"<body><main>{join(parts)}</main></body></html>\n")


def write_page(path: str | Path, text: str) -> Path:
    """Write a page atomically (a crash never leaves half a page)."""
    from actionbert.checkpoint import atomic_write

    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), suffix=".html")


def is_report(path: str | Path) -> bool:
    """Whether `path` is a page these modules wrote (its generator tag)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f'content="{GENERATOR}"' in f.read(400)
    except OSError:
        return False
