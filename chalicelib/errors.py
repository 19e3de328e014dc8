"""The broker's errors, documented in one place.

Every error the broker answers with is a :class:`BrokerError`. It carries a
``code`` (snake_case, stable, also sent as the ``X-Broker-Error`` header), an
HTTP ``status`` and a ``message``: a sentence a person can act on. Messages
never hold a private key, a token or a link token.

Example::

    raise InvalidRequest("team must be 1-128 letters, digits or ._:@-", code="invalid_team")
"""

from __future__ import annotations

from typing import Any


class BrokerError(Exception):
    """Base class: an error with a code, an HTTP status and an actionable message."""

    code = "internal_error"
    status = 500
    default_message = "The broker hit an unexpected error. Try again; if it persists, check the broker's logs."
    # Seconds a caller should wait before retrying (sent as ``Retry-After``); None: no such advice.
    retry_after: int | None = None

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        status: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.message = message or self.default_message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details = details or {}
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        body.update(self.details)
        return {"error": body}


class InvalidRequest(BrokerError):
    """400: the request itself is wrong (a field, a URL, a key, the JSON)."""

    code = "invalid_request"
    status = 400
    default_message = "The request is not valid."


class Unauthorized(BrokerError):
    """401: no usable API key."""

    code = "unauthorized"
    status = 401
    default_message = "Send a valid API key as 'Authorization: Bearer <key>'."


class Forbidden(BrokerError):
    """403: the API key or the browser may not do this."""

    code = "forbidden"
    status = 403
    default_message = "This API key may not act on this team."


class NotFound(BrokerError):
    """404: the team, user or link does not exist."""

    code = "not_found"
    status = 404
    default_message = "Nothing was found here."


class Gone(BrokerError):
    """410: the link or token existed but can no longer be used."""

    code = "gone"
    status = 410
    default_message = "This link can no longer be used."


class Conflict(BrokerError):
    """409: the state changed under the request."""

    code = "conflict"
    status = 409
    default_message = "The state changed while this request ran. Start again."


class JiraRejected(BrokerError):
    """422: Jira answered, and refused (an ``oauth_problem`` or an unexpected status)."""

    code = "jira_rejected"
    status = 422
    default_message = "Jira refused the request."


class JiraUnreachable(BrokerError):
    """502: no connection to Jira could be made."""

    code = "jira_unreachable"
    status = 502
    default_message = "The broker could not connect to Jira."


class JiraTLSError(BrokerError):
    """502: the TLS handshake with Jira failed (certificate or protocol)."""

    code = "jira_tls_error"
    status = 502
    default_message = "The TLS handshake with Jira failed."


class JiraTimeout(BrokerError):
    """504: Jira did not answer in time."""

    code = "jira_timeout"
    status = 504
    default_message = "Jira did not answer in time."


class JiraBadResponse(BrokerError):
    """502: Jira answered with something the broker cannot read."""

    code = "jira_bad_response"
    status = 502
    default_message = "Jira answered with something the broker could not read."


class StorageUnavailable(BrokerError):
    """503: DynamoDB or Secrets Manager throttled, failed or did not answer; retrying shortly may work."""

    code = "storage_unavailable"
    status = 503
    retry_after = 2
    default_message = (
        "The broker's storage (AWS DynamoDB / Secrets Manager) did not answer just now. Try again in a few seconds."
    )


class SealedValueUnreadable(BrokerError):
    """500: a stored, sealed credential does not decrypt (altered, copied from another record, or sealed
    under another key); the user has to connect again. The message never holds the value. Acting as a
    user turns it into 401 ``reauthorization_required`` with a connect link (:func:`chalicelib.acting.acting_as`)."""

    code = "sealed_value_unreadable"
    status = 500
    default_message = (
        "The stored Jira credential could not be decrypted (it was altered, or sealed for another record or "
        "with another key). Connect the Jira account again."
    )
