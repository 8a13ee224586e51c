"""LocalServer.stop against a real process group: a Ctrl-C or SIGTERM that arrives while the server is
being stopped must not cut the stop short (the server runs in a session of its own: nothing else would
stop it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tsrepo.serve.local import LocalServer, Ports

# A stand-in for tritonserver that takes a while to die: it ignores SIGTERM, so stop() waits out its
# timeout and then SIGKILLs the group.
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"


def test_an_interrupt_during_stop_is_raised_after_the_server_is_gone(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "up"  # its SIGTERM handler is in place
    work = tmp_path / "work"
    work.mkdir()
    server = LocalServer(proc, Ports(18000, 18001, 18002), work, work / "log")
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))  # while stop() waits for it
    begin = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            server.stop(timeout=1.0)
    finally:
        timer.cancel()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    assert time.monotonic() - begin >= 1.0  # the stop ran to its end: the wait, then SIGKILL
    assert proc.returncode == -signal.SIGKILL
    assert not work.exists()
