"""Telling a user's Ctrl-C (or SIGTERM) from a KeyboardInterrupt that a model's own code raises.

Both arrive as KeyboardInterrupt. The user's arrives through a signal, so the CLI's handler records
it: code that reports user-code failures (export.user_code) re-raises a recorded interrupt instead of
blaming the model, and the CLI ends it with "interrupted" and exit code 130.
"""

from __future__ import annotations

import signal
import threading

_received = False


def _handler(signum, _frame) -> None:
    global _received
    _received = True
    raise KeyboardInterrupt(signal.Signals(signum).name)


def install(*signals: signal.Signals) -> None:
    """Route these signals (default SIGINT) through the recording handler; main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in signals or (signal.SIGINT,):
        signal.signal(sig, _handler)


def received() -> bool:
    return _received
