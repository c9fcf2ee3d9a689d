"""The one mapping between domain errors and gRPC statuses carrying a google.rpc.ErrorInfo."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from hirepay_platform.errors import ErrorKind, HirepayError, RemoteError

_KIND_TO_CODE: dict[ErrorKind, grpc.StatusCode] = {
    ErrorKind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorKind.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.ABORTED: grpc.StatusCode.ABORTED,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorKind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorKind.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
}
_CODE_TO_KIND: dict[grpc.StatusCode, ErrorKind] = {v: k for k, v in _KIND_TO_CODE.items()}

STATUS_DETAILS_KEY = "grpc-status-details-bin"


def status_code(kind: ErrorKind) -> grpc.StatusCode:
    """gRPC status code for an error kind."""
    return _KIND_TO_CODE[kind]


def to_status(
    error: HirepayError, domain: str
) -> tuple[grpc.StatusCode, str, tuple[tuple[str, bytes]]]:
    """(code, message, trailing metadata) for a domain error, with one ErrorInfo in the details."""
    code = status_code(error.kind)
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=domain, metadata=error.metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=code.value[0], message=error.message, details=[detail])
    return code, error.message, ((STATUS_DETAILS_KEY, status.SerializeToString()),)


def error_info(rpc_error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo attached to a failed call, if any."""
    trailing = rpc_error.trailing_metadata() if hasattr(rpc_error, "trailing_metadata") else None
    for key, value in trailing or ():
        if key == STATUS_DETAILS_KEY:
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    return info
    return None


def from_rpc_error(rpc_error: grpc.RpcError, service: str = "") -> RemoteError:
    """Rebuild a domain-level error from a failed call (reason from ErrorInfo, else the code name)."""
    code: grpc.StatusCode = rpc_error.code()  # type: ignore[attr-defined]
    kind = _CODE_TO_KIND.get(code, ErrorKind.INTERNAL)
    info = error_info(rpc_error)
    reason = info.reason if info is not None else code.name
    metadata = dict(info.metadata) if info is not None else {}
    message = rpc_error.details() or code.name  # type: ignore[attr-defined]
    return RemoteError(message, reason=reason, kind=kind, metadata=metadata, service=service)


__all__ = ["code_pb2", "error_info", "from_rpc_error", "status_code", "to_status"]
