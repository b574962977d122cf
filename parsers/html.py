"""HTML bodies: readable text for agents and search, sanitised markup for display.

Text comes from the stdlib ``html.parser`` (no extra dependency, tolerant of
the tag soup mailers write); quoted blocks become ``> `` lines so the reply
stripper treats Gmail/Apple ``<blockquote>`` like plain-text quoting. Markup
shown to agents always goes through nh3 (ammonia): ``<script>`` smuggled in
as UTF-7 or as entities is gone after that.
"""

from __future__ import annotations

import re
from html import unescape
from html.parser import HTMLParser

import nh3

__all__ = ["html_to_text", "sanitise"]

_BREAK = {"br"}
_LINE = {
    "div",
    "li",
    "tr",
    "dt",
    "dd",
    "section",
    "article",
    "header",
    "footer",
    "nav",
    "aside",
    "main",
    "form",
    "fieldset",
    "figure",
    "figcaption",
    "address",
    "center",
    "caption",
    "option",
}
_PARA = {
    "p",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "ul",
    "ol",
    "dl",
    "table",
    "hr",
    "blockquote",
    "pre",
}
_SKIP = {"script", "style", "head", "title", "noscript", "template", "svg", "object", "iframe"}
_VOID = {
    "br",
    "hr",
    "img",
    "meta",
    "link",
    "input",
    "area",
    "base",
    "col",
    "embed",
    "param",
    "source",
    "track",
    "wbr",
}
_SPACE = re.compile(r"[ \t\r\n\f\v\xa0]+")
# A paragraph without margins is a line, as a mail client draws it: Outlook (Word) writes
# every line as <p class="MsoNormal"> (margin:0 in its style sheet) and a blank line as
# one holding only &nbsp;; Outlook on the web writes the margins inline.
_ZERO = re.compile(r"0*(?:\.0*)?(?:[a-z]{2}|%)?", re.IGNORECASE)
# Converting multi-megabyte HTML is slow in pure Python; beyond this the rest
# is still kept (sanitised) in ``html``, only the text view is cut.
MAX_HTML_TEXT = 2 * 1024 * 1024


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.cur: list[str] = []
        self.skip = 0
        self.pre = 0
        self.quote = 0
        self.line_p = False  # inside a <p> drawn as a line (_is_line)

    def _flush(self) -> None:
        line = "".join(self.cur)
        self.cur = []
        if not self.pre:
            line = line.strip()
        if self.quote:
            line = ">" * self.quote + (" " + line if line else "")
        self.lines.append(line)

    def _para(self) -> None:
        if self.cur:
            self._flush()
        if self.lines and self.lines[-1] != "":
            self.lines.append("")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            if tag not in _VOID:
                self.skip += 1
            return
        if tag in _BREAK:
            self._flush()
        elif tag == "p" and _is_line(attrs):
            if self.cur:
                self._flush()
            self.line_p = True
        elif tag in _PARA:
            self._para()
            if tag == "blockquote":
                self.quote += 1
            elif tag == "pre":
                self.pre += 1
        elif tag in _LINE:
            if self.cur:
                self._flush()
            if tag == "li":
                self.cur.append("- ")
        elif tag in ("td", "th") and self.cur:
            self.cur.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag == "p" and self.line_p:
            self._flush()  # an empty one too: Outlook's blank line
            self.line_p = False
        elif tag in _PARA:
            if tag == "blockquote":
                self._para()
                self.quote = max(0, self.quote - 1)
            elif tag == "pre":
                if self.cur:
                    self._flush()
                self.pre = max(0, self.pre - 1)
            self._para()
        elif tag in _LINE and self.cur:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self.pre:
            parts = data.replace("\r\n", "\n").split("\n")
            for i, piece in enumerate(parts):
                if i:
                    self._flush()
                self.cur.append(piece)
            return
        data = _SPACE.sub(" ", data)
        if data == " " and (not self.cur or self.cur[-1].endswith(" ")):
            return
        if self.cur and self.cur[-1].endswith(" ") and data.startswith(" "):
            data = data[1:]
        self.cur.append(data)

    def text(self) -> str:
        if self.cur:
            self._flush()
        out: list[str] = []
        for line in self.lines:
            if line == "" and (not out or out[-1] == ""):
                continue  # no leading or doubled blank lines
            out.append(line.rstrip())
        while out and out[-1] == "":
            out.pop()
        return "\n".join(out) + ("\n" if out else "")


def _is_line(attrs: list[tuple[str, str | None]]) -> bool:
    for name, value in attrs:
        if not value:
            continue
        if name == "class" and value.lstrip().startswith("Mso"):
            return True
        if name == "style" and "margin" in value.lower():
            return _no_margin(value)
    return False


def _no_margin(style: str) -> bool:
    """Whether a style sets the top and bottom margins to zero (shorthand or longhand)."""
    top = bottom = ""
    for decl in style.lower().split(";"):
        key, _, value = decl.partition(":")
        key, values = key.strip(), value.replace("!important", "").split()
        if not values:
            continue
        if key == "margin":
            top, bottom = values[0], values[2] if len(values) > 2 else values[0]
        elif key == "margin-top":
            top = values[0]
        elif key == "margin-bottom":
            bottom = values[0]
    return bool(top and bottom) and all(_ZERO.fullmatch(v) for v in (top, bottom))


def html_to_text(markup: str, defects: list[str]) -> str:
    """Readable text: blocks on their own lines, entities decoded, scripts and styles dropped."""
    if len(markup) > MAX_HTML_TEXT:
        markup = markup[:MAX_HTML_TEXT]
        defects.append("html-truncated-for-text")
    parser = _TextParser()
    try:
        parser.feed(markup)
        parser.close()
        return parser.text()
    except Exception:  # html.parser still raises on a few malformed declarations
        defects.append("html-parse-error")
        stripped = re.sub(r"(?is)<(script|style|head)\b.*?</\1\s*>|<[^>]*>", " ", markup)
        return "\n".join(" ".join(x.split()) for x in unescape(stripped).splitlines()).strip()


_SCHEMES = nh3.ALLOWED_URL_SCHEMES | {"cid"}
_CLEAN_CONTENT = set(nh3.CLEAN_CONTENT_TAGS) | {"title", "noscript", "template"}


def sanitise(markup: str) -> str:
    """Markup safe to show in the agent UI: no scripts, handlers or javascript: URLs."""
    return nh3.clean(markup, url_schemes=_SCHEMES, clean_content_tags=_CLEAN_CONTENT)
