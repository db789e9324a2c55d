"""Request errors with the status each front end answers: one table, so gRPC and HTTP always agree.

A plain :class:`~braid.common.errors.BraidError` raised while handling a request is the caller's fault (a bad field):
INVALID_ARGUMENT / 400. Anything else that escapes is a bug: INTERNAL / 500, logged with its traceback.
"""

from __future__ import annotations

import grpc

from braid.common.errors import BraidError, DeadlineExceeded, Unsupported


class ServiceError(BraidError):
    """A request error whose status is not INVALID_ARGUMENT."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400


class NotFound(ServiceError):
    grpc_code = grpc.StatusCode.NOT_FOUND
    http_status = 404


class Unauthenticated(ServiceError):
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401


class PermissionDenied(ServiceError):
    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    http_status = 403


class FailedPrecondition(ServiceError, Unsupported):
    """The request is well formed but this pipeline cannot do it (no reranker, an index kind without updates)."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 409


class Overloaded(ServiceError):
    """The concurrency limit is reached: rejected at once rather than queued without bound."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 429


class TooLarge(ServiceError):
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 413


class ShuttingDown(ServiceError):
    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503


class ShardUnavailable(ServiceError):
    """A serving shard could not answer in time (no live replica, or its replica died mid-request): retryable."""

    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503


def status_of(error: BaseException) -> tuple[grpc.StatusCode, int]:
    """The (gRPC code, HTTP status) a request failing with ``error`` answers."""
    if isinstance(error, ServiceError):
        return error.grpc_code, error.http_status
    if isinstance(error, Unsupported):  # raised below the service, by the pipeline layer
        return FailedPrecondition.grpc_code, FailedPrecondition.http_status
    if isinstance(error, DeadlineExceeded):
        return grpc.StatusCode.DEADLINE_EXCEEDED, 504
    if isinstance(error, BraidError):
        return grpc.StatusCode.INVALID_ARGUMENT, 400
    return grpc.StatusCode.INTERNAL, 500
