"""Jira's ``oauth_problem`` reports, explained in words a person can act on.

Admins see :func:`explain_setup_problem` (setting up or using the
Application Link); users see :func:`explain_exchange_problem` on the page
after Jira's Allow screen.

Example::

    except JiraOAuthError as error:
        raise explain_setup_problem(error, jira) from None
"""

from __future__ import annotations

from .errors import BrokerError, Gone, JiraRejected
from .oauth1 import JiraClient, JiraOAuthError, OAuthProblem, clock_skew
from .oauth2 import JiraOAuth2Client, OAuth2Error


def explain_setup_problem(error: JiraOAuthError, jira: JiraClient) -> BrokerError:
    """Turn Jira's oauth_problem into a message an admin can act on."""
    problem = error.problem
    name = problem.problem
    if name in {"consumer_key_unknown", "consumer_key_rejected"}:
        return JiraRejected(
            f"Jira at {jira.host} has no Application Link with consumer key '{jira.consumer_key}'. In Jira, open "
            "Administration > Applications > Application links, edit the link's incoming authentication, "
            "and check that its consumer key is exactly this one.",
            code="consumer_key_unknown",
        )
    if name == "signature_invalid":
        return _signature_invalid(jira)
    if name == "signature_method_rejected":
        return JiraRejected(
            f"Jira at {jira.host} refused the RSA-SHA1 signature method. Set up the Application Link's "
            "incoming authentication as OAuth with this public key (not a shared secret or OAuth 2.0).",
            code="signature_method_rejected",
        )
    if name == "timestamp_refused":
        return _clock_skew(problem, jira)
    return JiraRejected(
        f"Jira at {jira.host} refused the broker's OAuth request with oauth_problem={name}.",
        code="jira_oauth_error",
        details={"oauth_problem": name},
    )


def _signature_invalid(jira: JiraClient) -> BrokerError:
    reported = None
    try:
        reported = str(jira.server_info().get("baseUrl") or "").rstrip("/") or None
    except BrokerError:
        pass
    if reported and reported.lower() != jira.base_url.lower():
        return JiraRejected(
            f"Jira rejected the signature. Jira says its base URL is {reported}, but base_url is "
            f"{jira.base_url}: Jira checks signatures against its own URL, so use {reported} as base_url "
            "(or fix Jira's base URL or reverse proxy settings).",
            code="signature_invalid",
        )
    return JiraRejected(
        f"Jira at {jira.host} rejected the signature: the private key does not match the public key in "
        "the Application Link, or base_url differs from the URL Jira believes it is at (reverse proxy, "
        "context path). Paste this key's public key into the link, or check Jira's base URL.",
        code="signature_invalid",
    )


def _clock_skew(problem: OAuthProblem, jira: JiraClient) -> BrokerError:
    skew = clock_skew(problem)
    by = f" by about {abs(skew)} seconds" if skew is not None else ""
    return JiraRejected(
        f"Jira at {jira.host} refused the request's timestamp: its clock and the broker's differ{by}, more "
        "than the 5 minutes Jira allows. Synchronise Jira's server clock (NTP).",
        code="clock_skew",
    )


def explain_exchange_problem(error: JiraOAuthError, jira: JiraClient) -> BrokerError:
    """What went wrong when exchanging the approved request token, for the user's page."""
    name = error.problem.problem
    if name == "token_expired":
        return Gone(
            "The sign-in took longer than the 10 minutes Jira allows.",
            code="request_token_expired",
        )
    if name == "permission_denied":
        return JiraRejected("Jira says access was denied, so nothing was connected.", code="access_denied", status=403)
    if name == "permission_unknown":
        return JiraRejected(
            "Jira says the access was not approved yet. Open your connect link again and click Allow in Jira.",
            code="permission_unknown",
        )
    if name in {"token_rejected", "token_revoked"}:
        return JiraRejected(
            "Jira did not accept this sign-in (the token was rejected or revoked). Open your connect link again.",
            code=name,
        )
    return explain_setup_problem(error, jira)


# -- OAuth 2.0 ----------------------------------------------------------------------------------
def explain_client_refusal(error: OAuth2Error, jira: JiraOAuth2Client) -> BrokerError:
    """Jira's token endpoint refused the client id and secret (setup, or any later grant): for the admin.

    Jira answers ``invalid_client`` alike for an unknown client id and for a wrong secret, as RFC 6749
    5.2 has it, so one message names both causes.
    """
    if error.error == "invalid_client":
        return JiraRejected(
            f"Jira at {jira.host} does not accept client id '{jira.client_id}' with this client secret: no incoming "
            "OAuth 2.0 link has that client id, or the secret is not the link's. In Jira, open Administration > "
            "Applications > Application links, edit the External application (Incoming) link, and copy its client "
            "id and client secret again.",
            code="oauth2_client_rejected",
            details={"oauth2_error": error.error},
        )
    return JiraRejected(
        f"Jira at {jira.host} refused the broker's token request with error={error.error}"
        + (f" ({error.description})" if error.description else "")
        + ".",
        code="jira_oauth2_error",
        details={"oauth2_error": error.error},
    )


def explain_code_refusal(error: OAuth2Error, jira: JiraOAuth2Client) -> BrokerError:
    """What went wrong exchanging the authorization code, for the user's page."""
    if error.error == "invalid_grant":
        return JiraRejected(
            "Jira did not accept the sign-in's authorization code: it was already used, it expired (Jira's codes "
            "live 10 seconds), or the incoming link's redirect URL is not exactly the broker's. Open your connect "
            "link again; if it happens again, ask your Jira admin to check the link's redirect URL.",
            code="authorization_code_rejected",
            details={"oauth2_error": error.error},
        )
    return explain_client_refusal(error, jira)


def oauth2_not_available(jira: JiraOAuth2Client, version: str | None) -> BrokerError:
    """Jira answered 404 on its token endpoint: no OAuth 2.0 provider there."""
    running = f" (it reports version {version})" if version else ""
    return JiraRejected(
        f"Jira at {jira.host} has no OAuth 2.0 provider at {jira.base_url}/rest/oauth2/latest/token{running}. "
        "OAuth 2.0 incoming links need Jira Data Center 8.22 or later; on an older Jira use auth 'oauth1' with an "
        "Application Link. Also check that base_url includes any context path (such as /jira).",
        code="oauth2_not_available",
    )
