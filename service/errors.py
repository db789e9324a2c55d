"""Request errors with the status each front end answers: one table, so gRPC and HTTP always agree.

A plain :class:`~braid.common.errors.BraidError` raised while handling a request is the caller's fault (a bad field):
INVALID_ARGUMENT / 400. Anything else that escapes is a bug: INTERNAL / 500, logged with its traceback. The HTTP
status of a gRPC code is the one Google's API design guide gives it (:data:`HTTP_STATUS`, from ``google.rpc.Code``),
with one exception: a request over the size limit is RESOURCE_EXHAUSTED, as gRPC itself reports an oversized
message, but 413 over HTTP, since the guide's 429 would tell a client to send the same bytes again later.
"""

from __future__ import annotations

import grpc

from braid.common.errors import BraidError, DeadlineExceeded, DocumentsExist, UnknownDocuments, Unsupported

_CODE = grpc.StatusCode
#: The HTTP status of each gRPC status code, as Google's API design guide maps them.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    _CODE.OK: 200, _CODE.CANCELLED: 499, _CODE.UNKNOWN: 500, _CODE.INVALID_ARGUMENT: 400,
    _CODE.DEADLINE_EXCEEDED: 504, _CODE.NOT_FOUND: 404, _CODE.ALREADY_EXISTS: 409, _CODE.PERMISSION_DENIED: 403,
    _CODE.UNAUTHENTICATED: 401, _CODE.RESOURCE_EXHAUSTED: 429, _CODE.FAILED_PRECONDITION: 400, _CODE.ABORTED: 409,
    _CODE.OUT_OF_RANGE: 400, _CODE.UNIMPLEMENTED: 501, _CODE.INTERNAL: 500, _CODE.UNAVAILABLE: 503,
    _CODE.DATA_LOSS: 500,
}  # fmt: skip
#: Seconds a client told UNAVAILABLE (draining, a shard restarting) should wait before it retries (Retry-After).
RETRY_AFTER_S = 1


class ServiceError(BraidError):
    """A request error whose status is not INVALID_ARGUMENT; its HTTP status is the guide's for ``grpc_code``."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.grpc_code]


class NotFound(ServiceError):
    grpc_code = grpc.StatusCode.NOT_FOUND


class Unauthenticated(ServiceError):
    grpc_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ServiceError):
    grpc_code = grpc.StatusCode.PERMISSION_DENIED


class FailedPrecondition(ServiceError, Unsupported):
    """The request is well formed but this pipeline cannot do it (no reranker, an index kind without updates)."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class Overloaded(ServiceError):
    """The concurrency limit is reached: rejected at once rather than queued without bound."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class TooLarge(ServiceError):
    """A request over the size limit (the one status whose HTTP code is not the guide's: the module says why)."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED

    @property
    def http_status(self) -> int:
        return 413


class ShuttingDown(ServiceError):
    grpc_code = grpc.StatusCode.UNAVAILABLE


class ShardUnavailable(ServiceError):
    """A serving shard could not answer in time (no live replica, or its replica died mid-request): retryable."""

    grpc_code = grpc.StatusCode.UNAVAILABLE


def status_of(error: BaseException) -> tuple[grpc.StatusCode, int]:
    """The (gRPC code, HTTP status) a request failing with ``error`` answers."""
    if isinstance(error, ServiceError):
        return error.grpc_code, error.http_status
    if isinstance(error, Unsupported):  # raised below the service, by the pipeline layer
        code = grpc.StatusCode.FAILED_PRECONDITION
    elif isinstance(error, DeadlineExceeded):
        code = grpc.StatusCode.DEADLINE_EXCEEDED
    elif isinstance(error, UnknownDocuments):
        code = grpc.StatusCode.NOT_FOUND
    elif isinstance(error, DocumentsExist):
        code = grpc.StatusCode.ALREADY_EXISTS
    elif isinstance(error, BraidError):
        code = grpc.StatusCode.INVALID_ARGUMENT
    else:
        code = grpc.StatusCode.INTERNAL
    return code, HTTP_STATUS[code]
