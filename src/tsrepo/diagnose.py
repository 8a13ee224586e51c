"""Read TorchScript's error text: its sentences and the source line it points at."""

from __future__ import annotations

import re

FILE_LINE_RE = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+)')
HERE_MARK = "<--- HERE"


def _message_lines(text: str) -> list[str]:
    """TorchScript's own sentences: lines before the first source-range block."""
    out = []
    for line in text.splitlines():
        if FILE_LINE_RE.match(line) or line.strip().startswith("~"):
            break
        if line.strip():
            out.append(line.strip())
    return out


def locate(text: str) -> tuple[str, int, str] | None:
    """(file, line, code) of the line TorchScript points at with '<--- HERE'."""
    lines = text.splitlines()
    current: tuple[str, int] | None = None
    for i, line in enumerate(lines):
        m = FILE_LINE_RE.match(line)
        if m:
            current = (m.group("file"), int(m.group("line")))
            continue
        if HERE_MARK in line and current is not None and i > 0:
            # TorchScript reports the line it underlines; the block above it is only context.
            return current[0], current[1], lines[i - 1].strip()
    return None
