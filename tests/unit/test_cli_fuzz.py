"""Property: whatever a user types, every command ends with exit code 0, 1 or 2 and no traceback.

The options come from the commands themselves (click introspection), so a new option is fuzzed as
soon as it exists. Values are what people and scripts really pass by mistake: negative, zero, huge,
inf, nan, non-numeric, empty, unwritable and missing paths, malformed addresses, path escapes.
Nothing here can start a server: the working directory is an empty temporary folder (no default
repository or spec), and the only well-formed address refuses connections at once.
"""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsrepo.cli import main

NASTY = [
    "-1",
    "0",
    "1",
    "3",
    "-0",
    "1e309",
    "inf",
    "-inf",
    "nan",
    "abc",
    "",
    " ",
    "99999999999999999999",
    "2147483648",
    "1,2,,3",
    "1..0",
    "0..4",
    ",",
    "x:y:z",
    "x:float32:4",
    "x:float32:1..99999999999",
    "gpu:-1",
    "cpu:abc",
    "nul\x00byte",
    "/nonexistent/dir/file",
    "/sys/denied.json",
    "{tmp}/afile",
    "{tmp}/afile/sub",
    "{tmp}/empty",
    "localhost",
    "abc:def",
    "http://",
    "https://127.0.0.1:8000",
    "[::1]",
    "127.0.0.1:99999",
    "a b",
    "../../etc",
    "m/../x",
    "tsrepo_testmodels:linear",
    "tsrepo_testmodels:exits",
    "os:getcwd",
    "é",
]
UNREACHABLE = "127.0.0.1:1"  # refused at once: nothing listens on port 1 on loopback
# Long-running options get a small, valid value when the address is reachable-looking, so a
# well-formed run stays bounded in time (the property is about input handling, not load).
BOUNDED = {"timeout": "1", "duration": "0.2", "requests": "1", "warmup": "0", "window": "0.1", "max_windows": "3"}


def _commands() -> list[str]:
    return sorted(main.commands)


def _option_args(command: click.Command, draw, tmp: str) -> list[str]:
    positional: list[str] = []
    flags: list[str] = []
    options: dict[str, tuple[str, str]] = {}  # param name -> (option, value)
    for param in command.params:
        if isinstance(param, click.Argument):
            if param.required or draw(st.booleans()):
                positional.append(draw(st.sampled_from(NASTY)).replace("{tmp}", tmp))
            continue
        if not isinstance(param, click.Option) or param.name in ("help", "version"):
            continue
        if draw(st.integers(0, 3)):  # about one option in four is given
            continue
        if param.is_flag:
            flags.append(draw(st.sampled_from(list(param.opts) + list(param.secondary_opts))))
        elif param.name == "url":
            options["url"] = (param.opts[0], draw(st.sampled_from([UNREACHABLE, "localhost", "abc", "http://x", "h:0"])))
        else:
            options[param.name] = (param.opts[0], draw(st.sampled_from(NASTY)).replace("{tmp}", tmp))
    names = {p.name for p in command.params}
    if options.get("url", ("", UNREACHABLE))[1] == UNREACHABLE:
        # A well-formed address: keep the run bounded by replacing long waits with small valid values.
        for name, value in BOUNDED.items():
            if name in options:
                options[name] = (options[name][0], value)
        if "url" in names:
            options.setdefault("url", ("--url", UNREACHABLE))
        if "timeout" in names:
            options.setdefault("timeout", ("--timeout", "1"))
    args = [*positional, *flags]
    for opt, value in options.values():
        args += [opt, value]
    return args


@pytest.mark.parametrize("name", _commands())
def test_no_input_ends_in_a_traceback_or_an_odd_exit_code(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "empty").mkdir()
    command = main.commands[name]
    runner = CliRunner()

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(st.data())
    def check(data):
        args = _option_args(command, data.draw, str(tmp_path))
        result = runner.invoke(main, [name, *args], catch_exceptions=True)
        shown = f"tsrepo {name} {args!r} -> exit {result.exit_code}\n{result.output[-2000:]}"
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            shown + f"\nraised {type(result.exception).__name__}: {result.exception}"
        )
        assert result.exit_code in (0, 1, 2), shown
        assert "Traceback" not in result.output, shown

    check()
