"""Issue 8, defect 16: a lambda (or plain function) stored as a module attribute is TS11, located,
with an explanation; before, it was TS00 with "read TorchScript's message below" and nothing below."""

from __future__ import annotations

import inspect

import torch
from torch import nn

from tsrepo.doctor import script_findings
from tsrepo.doctor.translate import classify


class LambdaAttribute(nn.Module):
    def __init__(self):
        super().__init__()
        self.act = lambda x: x * 2
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return self.act(self.lin(x))  # <- TS11


def _line(cls, marker: str) -> int:
    lines, start = inspect.getsourcelines(cls)
    return start + next(i for i, line in enumerate(lines) if marker in line)


def test_a_lambda_attribute_is_ts11_at_the_call_with_its_name():
    scripted, findings = script_findings(LambdaAttribute())
    assert scripted is None
    (f,) = findings
    assert f.kind == "TS11" and f.line == _line(LambdaAttribute, "# <- TS11")
    assert "`self.act` is a lambda stored as an attribute" in f.detail


def test_torchscripts_own_message_for_it_is_classified_ts11():
    class Fresh(nn.Module):  # a class TorchScript has not seen yet in this process
        def __init__(self):
            super().__init__()
            self.act = lambda x: x + 1

        def forward(self, x):
            return self.act(x)

    try:
        torch.jit.script(Fresh())
    except Exception as e:  # the message TorchScript gives on torch 2.13
        assert classify(str(e)) == "TS11"
    else:
        raise AssertionError("a lambda attribute scripted")
