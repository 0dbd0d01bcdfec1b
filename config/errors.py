"""The one error tree of embedq.

Every error subclasses :class:`EmbedqError`; each family below it says who can fix the problem.
Errors about values the caller passed also subclass :class:`ValueError`, as pydantic-settings'
errors do, so callers' existing ``except ValueError`` handlers keep working.
"""

from __future__ import annotations

__all__ = [
    "BrokerUnavailableError",
    "ConfigError",
    "EmbedqError",
    "InvalidInputError",
    "InvalidMessageError",
    "JobFailedError",
    "JobNotFoundError",
    "JobTimeoutError",
    "ModelLoadError",
    "ModelMismatchError",
    "SearchError",
    "StoreRejectedError",
    "StoreUnavailableError",
    "TransientError",
    "WorkerNotReadyError",
]


class EmbedqError(Exception):
    """Base class of every error embedq raises on purpose."""


class ConfigError(EmbedqError, ValueError):
    """A setting is invalid or names something that does not exist; raised at start-up."""


class InvalidInputError(EmbedqError, ValueError):
    """The caller passed texts, ids, metadata or a collection name that cannot be stored."""


class InvalidMessageError(EmbedqError, ValueError):
    """A message taken from the queue does not follow the contract; it is dead-lettered."""


class ModelLoadError(EmbedqError):
    """The configured model could not be loaded (missing folder, hub unreachable, bad files)."""


class ModelMismatchError(EmbedqError):
    """A collection was built with another model (or dimension) than the one asked to use it."""


class StoreRejectedError(EmbedqError):
    """Milvus refused the request itself (data that does not fit the collection); a retry of
    the same request cannot help, so the batch goes to the dead letters."""


class TransientError(EmbedqError):
    """A dependency is down or overloaded; the same call may succeed later (tasks retry)."""


class StoreUnavailableError(TransientError):
    """The vector store (Milvus) could not be reached or refused the call for now."""


class BrokerUnavailableError(TransientError):
    """Redis could not be reached; the error says which batches, if any, were already queued."""


class WorkerNotReadyError(TransientError):
    """A worker process could not open its model or clients; another try may succeed."""


class JobFailedError(EmbedqError):
    """At least one batch of a job failed for good; ``errors`` holds the reasons."""

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class JobTimeoutError(EmbedqError, TimeoutError):
    """A job or a search did not finish within the time the caller allowed."""


class JobNotFoundError(EmbedqError, LookupError):
    """No progress record exists for a job id (wrong id, or it expired)."""


class SearchError(EmbedqError):
    """A search could not be answered; the message carries the worker's reason."""
