"""The redaction net under every log line and chalice local's access log."""

from __future__ import annotations

from chalicelib.logs import redact


def test_access_log_paths_and_queries() -> None:
    line = '127.0.0.1 - - "GET /oauth/callback?oauth_token=ABCDEF123&oauth_verifier=XyZ987 HTTP/1.1" 200 -'
    cleaned = redact(line)
    assert "ABCDEF123" not in cleaned and "XyZ987" not in cleaned
    assert "oauth_token=[redacted]" in cleaned
    assert "/connect/[redacted] HTTP" in redact('"POST /connect/eyJrIjoiYyJ9.mac-123_x HTTP/1.1" 303 -')


def test_percent_encoded_base_strings() -> None:
    base = (
        "POST&http%3A%2F%2Fj%2Fa&oauth_consumer_key%3Dk%26oauth_token%3DSECRETTOKEN%26oauth_verifier%3DVVV123%26x%3D1"
    )
    cleaned = redact(base)
    assert "SECRETTOKEN" not in cleaned and "VVV123" not in cleaned
    assert "oauth_consumer_key%3Dk" in cleaned


def test_headers_keys_and_pem() -> None:
    assert "sekrit" not in redact("Authorization: Bearer sekrit")
    assert "sig" not in redact('Authorization: OAuth oauth_signature="sig", oauth_token="tok"')
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----"
    assert "MIIEvQ" not in redact(f"key={pem} trailing")
    assert "tok123" not in redact('{"oauth_token": "tok123"}')


def test_browser_binding_cookies() -> None:
    for header in (
        "Cookie: a=1; jira_broker_browser=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MDEyMzQ1Njc4OTAx; b=2",
        "Set-Cookie: __Host-jira_broker_browser=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MDEyMzQ1Njc4OTAx; Path=/; HttpOnly",
        '{"cookie": "broker_setup_csrf=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MDEyMzQ1Njc4OTAx"}',
    ):
        cleaned = redact(header)
        assert "Zm9vYmFy" not in cleaned and "[redacted]" in cleaned


def test_oauth2_codes_states_tokens_and_secrets() -> None:
    line = '127.0.0.1 - - "GET /oauth2/callback?code=C0DE-123&state=ST4TE_456 HTTP/1.1" 200 -'
    cleaned = redact(line)
    assert "C0DE-123" not in cleaned and "ST4TE_456" not in cleaned
    assert "/oauth2/callback?code=[redacted]&state=[redacted]" in cleaned
    form = "grant_type=refresh_token&refresh_token=RTRT99&client_secret=CS77&code_verifier=VER55&redirect_uri=x"
    cleaned = redact(form)
    assert not {"RTRT99", "CS77", "VER55"} & set(cleaned.replace("&", " ").replace("=", " ").split())
    assert "grant_type=refresh_token&" in cleaned and "redirect_uri=x" in cleaned
    assert "AT12" not in redact('{"access_token": "AT12", "token_type": "bearer"}')
    # An error code field is not a secret: it stays readable.
    assert redact('{"code":"not_connected"}') == '{"code":"not_connected"}'
