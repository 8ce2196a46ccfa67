"""One error hierarchy for every service.

Each error knows its gRPC status code and its HTTP status. Servers raise these;
`ErrorMappingInterceptor` turns them into gRPC statuses, and the edge turns a
gRPC status back into an HTTP answer with `error_from_status`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, cast

import grpc


class BatonError(Exception):
    """Base of every error a caller is meant to see."""

    grpc_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    http_status: ClassVar[int] = 500
    # `code` is the machine-readable name in REST error bodies.
    code: ClassVar[str] = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(BatonError):
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400
    code = "invalid_argument"


class Unauthenticated(BatonError):
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401
    code = "unauthenticated"


class PermissionDenied(BatonError):
    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    http_status = 403
    code = "permission_denied"


class NotFound(BatonError):
    grpc_code = grpc.StatusCode.NOT_FOUND
    http_status = 404
    code = "not_found"


class FailedPrecondition(BatonError):
    """The action is not allowed in the current state."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 409
    code = "failed_precondition"


class Conflict(BatonError):
    """A concurrent change won: the caller's view (version) is stale."""

    grpc_code = grpc.StatusCode.ABORTED
    http_status = 409
    code = "conflict"


class PayloadTooLarge(BatonError):
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 413
    code = "payload_too_large"


class ResourceExhausted(BatonError):
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 429
    code = "resource_exhausted"
    # The edge's Retry-After when the raiser gives none (a full host, ...).
    DEFAULT_RETRY_AFTER_S: ClassVar[int] = 5

    def __init__(self, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        # Whole seconds until trying again may succeed; crosses gRPC as the
        # `retry-after` trailing metadata (RETRY_AFTER_KEY).
        self.retry_after_s = retry_after_s or self.DEFAULT_RETRY_AFTER_S


RETRY_AFTER_KEY = "retry-after"


class Unavailable(BatonError):
    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503
    code = "unavailable"


class DeadlineExceeded(BatonError):
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    http_status = 503
    code = "deadline_exceeded"


_BY_GRPC_CODE: dict[grpc.StatusCode, type[BatonError]] = {
    cls.grpc_code: cls
    for cls in (
        InvalidArgument,
        Unauthenticated,
        PermissionDenied,
        NotFound,
        FailedPrecondition,
        Conflict,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
    )
}


def error_from_status(code: grpc.StatusCode, details: str | None) -> BatonError:
    """The BatonError a client should raise for a gRPC status it received."""
    cls = _BY_GRPC_CODE.get(code, BatonError)
    return cls(details or code.name.lower())


def error_from_rpc(exc: grpc.aio.AioRpcError) -> BatonError:
    error = error_from_status(exc.code(), exc.details())
    if isinstance(error, ResourceExhausted):
        # grpc.aio gives (key, value) pairs, whatever its stubs say.
        pairs = cast(Iterable[tuple[str, object]], exc.trailing_metadata() or ())
        for key, value in pairs:
            if key == RETRY_AFTER_KEY and str(value).isdigit():
                error.retry_after_s = max(1, int(str(value)))
    return error
