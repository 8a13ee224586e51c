"""Option types and checks the commands share: finite numbers, output paths checked before any work,
and library UsageErrors turned into click's usage errors (which name the option)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import click

from tsrepo.errors import UsageError

MAX_SECONDS = 86400.0


class Finite(click.ParamType):
    """A finite float in a range: click's FloatRange lets 'nan' through, and 'inf' past a lower bound."""

    name = "number"

    def __init__(self, low: float | None = None, high: float | None = None, low_open: bool = False):
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value, param, ctx):
        if isinstance(value, float) and math.isfinite(value):
            number = value
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number", param, ctx)
            if not math.isfinite(number):
                self.fail(f"{value!r} is not a finite number", param, ctx)
        if self.low is not None and (number <= self.low if self.low_open else number < self.low):
            self.fail(f"{number:g} must be {'>' if self.low_open else '>='} {self.low:g}", param, ctx)
        if self.high is not None and number > self.high:
            self.fail(f"{number:g} must be <= {self.high:g}", param, ctx)
        return number


def usage(fn):
    """A click callback that turns the library's UsageError into click's, which names the option."""

    def callback(ctx, param, value):
        if value is None:
            return None
        try:
            return fn(value, param.opts[0] if param.opts else param.name)
        except UsageError as e:
            raise click.BadParameter(str(e).split(": ", 1)[-1], ctx, param) from None

    return callback


def output_path(value, option):
    """Checked before any load is sent: a bench must not run for minutes and then fail to write."""
    path = Path(value)
    if path.is_dir():
        raise UsageError(f"`{option}`: {path} is a folder; give a file name")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"`{option}`: {parent} is a file, not a folder")
    if not parent.is_dir():
        raise UsageError(f"`{option}`: folder {parent} does not exist; create it first")
    # A real probe, not os.access: root passes os.access on /sys and read-only mounts.
    from tsrepo.repository import probe_writable

    reason = probe_writable(parent)
    if reason or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"`{option}`: {path} is not writable ({reason or 'permission denied'})")
    if option == "--plot" and path.suffix.lower() != ".png":
        raise UsageError(f"`{option}`: {path} must end in .png (the plot is a PNG image)")
    return path


