"""Errors of the deploy package (kept beside it until errors.py takes them)."""

from __future__ import annotations

from tsrepo.errors import TsrepoError


class RemoteError(TsrepoError):
    """The object store refused or failed a request: a problem with the remote side, not the command line."""

    exit_code = 1


class DeployError(TsrepoError):
    """The repository or the rendered manifests cannot be used as asked: the message says how to fix it."""
