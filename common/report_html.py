"""The report's Markdown as one self-contained HTML file: tables rendered by markdown-it-py (CommonMark +
GFM tables), every local PNG it shows embedded as a base64 data URI, the style inline. Links to other local
files (sample videos) stay relative links to their place on disk."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
img { max-width: 100%; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""

_IMG_SRC = re.compile(r'(<img\s[^>]*?src=")([^"]+)(")')


def markdown_to_html(markdown: str, base: Path, title: str) -> str:
    """`markdown` (whose image paths are relative to `base`) -> a standalone HTML document."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown)

    def embed(m: re.Match) -> str:
        src = html.unescape(m.group(2))
        path = base / src
        if (
            src.startswith(("data:", "http:", "https:"))
            or path.suffix.lower() != ".png"
            or not path.is_file()
        ):
            return m.group(0)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"{m.group(1)}data:image/png;base64,{data}{m.group(3)}"

    body = _IMG_SRC.sub(embed, body)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body>\n{body}</body></html>\n"
    )
