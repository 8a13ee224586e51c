"""One exception hierarchy, with messages written for users.

The CLI prints a ``TsrepoError`` without a traceback and exits 2; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations


class TsrepoError(Exception):
    """A problem the user can fix: the message says where, what and how."""

    exit_code = 2


class SpecError(TsrepoError):
    """The spec file (or the flags standing in for it) is invalid."""


class ExportError(TsrepoError):
    """The model could not be imported, scripted, traced or loaded."""


class VerifyError(TsrepoError):
    """The exported model does not behave like the eager one, or cannot be batched."""


class ServingError(TsrepoError):
    """The model uses something Triton's libtorch backend cannot serve."""


class ConfigError(TsrepoError):
    """A rendered config.pbtxt is invalid or does not match what produced it."""


class RepositoryError(TsrepoError):
    """Writing the model repository failed or would overwrite something."""


class MetaError(TsrepoError):
    """A tsrepo.json file is not what tsrepo build writes."""


class UsageError(TsrepoError):
    """A command-line option is invalid: the message names the option and the fix."""


class ServeError(TsrepoError):
    """The server could not be started or a model failed to load."""


class ServerFailed(ServeError):
    """The server (or a model on it) failed: not the user's input, so exit 1 like a client-side failure."""

    exit_code = 1


class ClientError(TsrepoError):
    """Talking to a running server failed: a problem with the server, not the command line."""

    exit_code = 1


class ServerUnreachable(ClientError):
    """Nothing answered at the address."""


class ServerTimeout(ClientError):
    """The server answered too slowly or never became ready."""


class ServerRefused(ClientError):
    """The server answered with an error."""


def where(source: str, model: str | None = None, field: str | None = None) -> str:
    """Format the 'where' prefix shared by all spec and build messages."""
    parts = [source]
    if model:
        parts.append(f"model '{model}'")
    if field:
        parts.append(f"`{field}`")
    return ": ".join(parts)
