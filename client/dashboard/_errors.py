"""What a person sees when a call to the parasal server fails: a title, a sentence that says
what to do, the gRPC status, and the HTTP status of the page.

The SDK raises typed `ParasalError`s; this is the one place they become pages, so every route
just lets them propagate (the app's exception handler calls `error_view`).
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from ..errors import ParasalError

# gRPC status -> HTTP status of the error page. The dashboard is a gateway: a server that is
# down or that refuses the dashboard's token is the upstream's failure (5xx), not the
# browser's (a 401 would ask the browser for credentials it cannot give).
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAUTHENTICATED: 502,
    grpc.StatusCode.PERMISSION_DENIED: 502,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


@dataclass(frozen=True)
class ErrorView:
    title: str
    message: str
    hint: str
    code: str  # the gRPC status name ("UNAVAILABLE"), or "" for the dashboard's own errors
    http_status: int


def error_view(exc: ParasalError, target: str) -> ErrorView:
    """The page for an SDK error raised while talking to the server at ``target``."""
    code = exc.code
    status = HTTP_STATUS.get(code, 500)
    details = exc.details or code.name.lower()
    if code == grpc.StatusCode.UNAVAILABLE:
        return ErrorView(
            "The parasal server cannot be reached",
            f"No answer from {target}: {details}",
            f"Check that `parasal serve` is running at {target}; this page works again once it is.",
            code.name,
            status,
        )
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return ErrorView(
            "The server refused the dashboard's token",
            f"{target} answered: {details}",
            "Restart the dashboard with --token-file FILE holding the server's token (the file given to "
            "`parasal serve --token-file`).",
            code.name,
            status,
        )
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return ErrorView(
            "The server does not allow this",
            f"{target} answered: {details}",
            "The dashboard's token lacks the permission for this call.",
            code.name,
            status,
        )
    if code == grpc.StatusCode.NOT_FOUND:
        return ErrorView("Not found", details, "Check the id in the address.", code.name, status)
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
        return ErrorView("The request was refused", details, "Go back and correct the values.", code.name, status)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ErrorView(
            "The server took too long",
            details,
            "The server may be busy; try again, or start the dashboard with a larger --timeout.",
            code.name,
            status,
        )
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return ErrorView(
            "The server does not offer this",
            details,
            "The parasal server is older than this dashboard; upgrade it.",
            code.name,
            status,
        )
    return ErrorView("The server reported an error", details, "", code.name, status)


def dashboard_error(title: str, message: str, http_status: int = 400) -> ErrorView:
    """An error found by the dashboard itself (a bad form value), before any call."""
    return ErrorView(title, message, "Go back and correct the values.", "", http_status)


class FormError(Exception):
    """A form or query value the dashboard cannot use; shown as a 400 page."""
