"""Waiting for models, not for the server: with one model failed (--no-exit-on-error) the server is
never ready as a whole, yet every other model serves. Each model is waited for until it is READY or
has settled in another state, whose reason (from the repository index) is reported at once."""

from __future__ import annotations

import time

from tsrepo.client import transport
from tsrepo.errors import ClientError, ServerRefused, ServerTimeout, ServerUnreachable

POLL_S = 0.25
SETTLING = {"READY", "LOADING", ""}  # states that may still become READY


def _index(client: transport.Transport) -> list[dict] | None:
    try:
        return client.repository_index()
    except ClientError:
        return None  # a server without the repository extension: only readiness itself can tell


def settled_reason(index: list[dict] | None, model: str) -> str | None:
    """Why `model` will not become ready, from the repository index; None while it still may."""
    if index is None:
        return None
    entries = [m for m in index if m.get("name") == model]
    if not entries:
        names = sorted({m.get("name", "") for m in index} - {""})
        return f"the server has no model {model!r} (it has {names})"
    if any(e.get("state", "") in SETTLING for e in entries):
        return None
    entry = entries[-1]
    return f"{entry.get('state')}: {entry.get('reason') or 'no reason given'}"


def wait_models(client: transport.Transport, models: list[str], timeout: float) -> dict[str, str | None]:
    """model -> None when ready, else the reason it is not; bounded by `timeout`. An unreachable
    server is retried until then and raised (ServerUnreachable)."""
    deadline = time.monotonic() + timeout
    reasons: dict[str, str | None] = {}
    pending = list(dict.fromkeys(models))
    while True:
        unreachable: ServerUnreachable | None = None
        still = []
        index_read, index = False, None
        for model in pending:
            try:
                if client.model_ready(model):
                    reasons[model] = None
                    continue
            except (ServerTimeout, ServerRefused):
                pass
            except ServerUnreachable as e:
                unreachable = e
                still.append(model)
                continue
            if not index_read:
                index, index_read = _index(client), True
            reason = settled_reason(index, model)
            if reason is None:
                still.append(model)
            else:
                reasons[model] = reason
        pending = still
        if not pending:
            return reasons
        if time.monotonic() >= deadline:
            if unreachable is not None:
                raise ServerUnreachable(f"{unreachable} (waited {timeout:g} s)")
            for model in pending:
                reasons[model] = f"not ready after {timeout:g} s"
            return reasons
        time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
