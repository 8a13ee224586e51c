"""Error translation: a torch.jit.script exception -> a located finding of a known class."""

from __future__ import annotations

import re

from tsrepo import diagnose
from tsrepo.doctor.static import Finding

# (pattern in TorchScript's message, class). First match wins; order matters.
PATTERNS: list[tuple[re.Pattern, str]] = [
    (re.compile(r"Comprehension ifs are not supported"), "TS01"),
    (re.compile(r"Set aren't supported|SetComp aren't supported|Unknown type constructor (Set|FrozenSet)"), "TS02"),
    (re.compile(r"DictComp aren't supported"), "TS03"),
    (re.compile(r"Expected a default value of type Tensor \(inferred\)|found Tensor \(inferred\)"), "TS13"),
    (re.compile(r"Expected integer literal for index"), "TS07"),
    (re.compile(r"Unable to extract string literal index"), "TS08"),
    (re.compile(r"has no attribute or method '__call__'"), "TS09"),
    (re.compile(r"cannot be used as a value\. Perhaps it is a closed over global variable"), "TS10"),
    (re.compile(r"Could not cast attribute|failed to convert Python type"), "TS05"),
    (re.compile(r"Failed to get source for <function \w+\.__init__"), "TS05"),
    (re.compile(r"[Cc]ould not get source code|Can't get source for|Failed to get source for"), "TS06"),
    (
        re.compile(
            r"getattr's second argument must be a string literal|try blocks aren't supported|"
            r"Yield aren't supported|Lambda aren't supported|GeneratorExp aren't supported|"
            r"cannot statically infer the expected size of a list|With item expression must return an object|"
            # A lambda or plain function stored as a module attribute and called as self.f(...).
            r"exists as an attribute on the Python module, but we failed to compile it"
        ),
        "TS11",
    ),
    (re.compile(r"found Tensor|Unsupported value kind: Tensor|Union\[Tensor, int\]"), "TS12"),
    (re.compile(r"can't take variable number of arguments|keyword-only arguments"), "TS04"),
]


def classify(message: str) -> str:
    for pattern, kind in PATTERNS:
        if pattern.search(message):
            return kind
    return "TS00"


def translate(exc: BaseException) -> Finding:
    """The failure as one finding: class, location (when TorchScript gave one), and its first sentence."""
    text = str(exc)
    kind = classify(text)
    where = diagnose.locate(text)
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    first = first.rstrip(":")
    if len(first) > 240:
        first = first[:237] + "..."
    if where:
        file, line, code = where
        # "varargs" errors point at the call site; at a `with` it is the context manager's __enter__/__exit__.
        if kind == "TS04" and code.startswith("with "):
            kind = "TS11"
        elif kind == "TS04" and not code.startswith("def "):
            kind = "TS09" if re.search(r"self\.\w+\(", code) else "TS11"
        return Finding(file, line, 1, kind, code, f"TorchScript: {first}")
    return Finding("<unknown>", 0, 0, kind, "", f"TorchScript: {first}")
