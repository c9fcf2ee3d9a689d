"""Domain error hierarchy shared by every service (standard library only, so domains may import it).

Each error carries a kind (mapped once, at the edge, to a gRPC status or an HTTP status), a stable
UPPER_SNAKE reason for machines, a message for people, and string metadata (e.g. the field at fault).
"""

from __future__ import annotations

import enum


class ErrorKind(enum.Enum):
    """What kind of failure an error is; names follow gRPC status codes."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    ABORTED = "ABORTED"
    UNAVAILABLE = "UNAVAILABLE"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    INTERNAL = "INTERNAL"


class HirepayError(Exception):
    """Base of every expected failure. Subclasses set `kind` and `reason` as class attributes."""

    kind: ErrorKind = ErrorKind.INTERNAL
    reason: str = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        kind: ErrorKind | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        if kind is not None:
            self.kind = kind
        self.metadata: dict[str, str] = dict(metadata or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason}: {self.message!r}, {self.metadata})"


class ValidationError(HirepayError):
    """Input refused; metadata maps each bad field to what is wrong with it."""

    kind = ErrorKind.INVALID_ARGUMENT
    reason = "VALIDATION_FAILED"

    def __init__(self, message: str, *, fields: dict[str, str] | None = None) -> None:
        super().__init__(message, metadata=fields)

    @property
    def fields(self) -> dict[str, str]:
        return self.metadata


class NotFound(HirepayError):
    """The named resource does not exist (or is not visible to the caller)."""

    kind = ErrorKind.NOT_FOUND
    reason = "NOT_FOUND"


class AlreadyExists(HirepayError):
    """A create collided with an existing resource, e.g. an idempotency key reused differently."""

    kind = ErrorKind.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class PreconditionFailed(HirepayError):
    """A business rule refused the operation or the transition is not allowed."""

    kind = ErrorKind.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class Conflict(HirepayError):
    """A concurrent operation won a race; the caller may retry."""

    kind = ErrorKind.ABORTED
    reason = "CONFLICT"


class Unavailable(HirepayError):
    """A transient fault (a dependency down or overloaded); retry later."""

    kind = ErrorKind.UNAVAILABLE
    reason = "UNAVAILABLE"


class PermissionDenied(HirepayError):
    """The caller may not touch this resource."""

    kind = ErrorKind.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class RemoteError(HirepayError):
    """An error answered by another service, rebuilt from its status and ErrorInfo."""

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        kind: ErrorKind,
        metadata: dict[str, str] | None = None,
        service: str = "",
    ) -> None:
        super().__init__(message, reason=reason, kind=kind, metadata=metadata)
        self.service = service


class StaleRow(Exception):
    """A unit of work that assumed a row without reading it (a guarded write batch,
    hirepay_platform.write_batch) wrote nothing: the row had changed, or the unit of work needed
    a statement of its own first. Not an error of the call: redo the unit of work reading the row
    under its lock (never surfaces to a caller)."""
