"""Ids, Jira base URLs, return_to, and where the broker may connect in each stage."""

from __future__ import annotations

import dataclasses

import pytest

from chalicelib.config import load_settings
from chalicelib.errors import BrokerError, InvalidRequest
from chalicelib.urls import check_jira_destination, check_return_to, normalize_base_url, validate_id, with_query


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://jira.example.com/", "https://jira.example.com"),
        ("https://Jira.Example.com/Jira//", "https://Jira.Example.com/Jira"),
        ("http://127.0.0.1:8080/jira", "http://127.0.0.1:8080/jira"),
        ("  https://jira.example.com  ", "https://jira.example.com"),
    ],
)
def test_base_url_keeps_case_and_context_path_and_drops_trailing_slash(raw: str, expected: str) -> None:
    assert normalize_base_url(raw) == expected


@pytest.mark.parametrize(
    ("raw", "word"),
    [
        ("ftp://jira.example.com", "http"),
        ("jira.example.com", "http"),
        ("https://user:pw@jira.example.com", "user"),
        ("https://jira.example.com/?a=1", "query"),
        ("https://jira.example.com/?", "query"),
        ("https://jira.example.com/#top", "fragment"),
        ("https://jira.example.com:99999", "port"),
        ("https:///jira", "host"),
        ("https://jira.example.com/a b", "spaces"),
        ("", "non-empty"),
        (None, "non-empty"),
    ],
)
def test_bad_base_urls_name_the_problem(raw: object, word: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        normalize_base_url(raw)
    assert caught.value.code == "invalid_base_url"
    assert word in caught.value.message


@pytest.mark.parametrize("value", ["acme", "a", "T0:chan.1@x-y_z", "x" * 128])
def test_valid_ids(value: str) -> None:
    assert validate_id("team", value) == value


def test_percent_encoded_ids_from_chalice_local_are_decoded() -> None:
    assert validate_id("user", "alice%40example.com") == "alice@example.com"


@pytest.mark.parametrize("value", ["", "x" * 129, "a b", "a/b", "a%2Fb", "é", "a+b"])
def test_invalid_ids(value: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_id("team", value)
    assert caught.value.code == "invalid_team"


def _settings(stage: str, **changes: object):  # type: ignore[no-untyped-def]
    import os

    os.environ["BROKER_STAGE"] = stage
    try:
        return dataclasses.replace(load_settings(), **changes)
    finally:
        os.environ.pop("BROKER_STAGE")


def test_local_stage_allows_http_and_loopback() -> None:
    check_jira_destination("http://127.0.0.1:8080/jira", _settings("local"))


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://jira.example.com", "insecure_base_url"),
        ("https://127.0.0.1", "base_url_not_allowed"),
        ("https://169.254.169.254", "base_url_not_allowed"),
        ("https://10.1.2.3", "base_url_not_allowed"),
        ("https://192.168.0.10:8443/jira", "base_url_not_allowed"),
        ("https://[::1]/", "base_url_not_allowed"),
        ("https://[::ffff:127.0.0.1]/", "base_url_not_allowed"),
        ("https://localhost/", "base_url_not_allowed"),
    ],
)
def test_other_stages_refuse_http_and_private_networks(url: str, code: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_jira_destination(url, _settings("prod"))
    assert caught.value.code == code


def test_configuration_can_allow_private_networks_and_http() -> None:
    check_jira_destination("http://10.1.2.3/jira", _settings("prod", allow_private_networks=True, allow_http_jira=True))


def test_public_addresses_pass_in_prod() -> None:
    check_jira_destination("https://8.8.8.8/jira", _settings("prod"))


def test_unresolvable_host_is_unreachable() -> None:
    with pytest.raises(BrokerError) as caught:
        check_jira_destination("https://no-such-host.invalid/", _settings("prod"))
    assert caught.value.code == "jira_unreachable"


def test_return_to_must_be_on_the_allowlist() -> None:
    settings = _settings("local", return_to_origins=("https://chat.example.com",))
    assert check_return_to("https://chat.example.com/done?x=1", settings) == "https://chat.example.com/done?x=1"
    for bad, code in [
        ("https://evil.example.com/", "return_to_not_allowed"),
        ("https://chat.example.com.evil.com/", "return_to_not_allowed"),
        ("http://chat.example.com/", "return_to_not_allowed"),
        ("javascript:alert(1)", "invalid_return_to"),
        ("//chat.example.com/", "invalid_return_to"),
        ("https://user@chat.example.com/", "invalid_return_to"),
    ]:
        with pytest.raises(InvalidRequest) as caught:
            check_return_to(bad, settings)
        assert caught.value.code == code, bad


def test_with_query_keeps_existing_parameters() -> None:
    assert with_query("https://chat.example.com/done?x=1", jira="connected") == (
        "https://chat.example.com/done?x=1&jira=connected"
    )


def test_the_cached_check_refuses_then_remembers_only_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib import urls

    settings = _settings("prod")
    addresses = {"jira.example.com": ["8.8.8.8"]}
    monkeypatch.setattr(urls, "_resolve", lambda host, port: addresses[host])
    urls._checked.clear()
    urls.check_jira_destination_cached("https://jira.example.com", settings)
    addresses["jira.example.com"] = ["10.0.0.5"]  # DNS now points inside
    urls.check_jira_destination_cached("https://jira.example.com", settings)  # remembered for a minute
    urls._checked.clear()  # a minute later
    with pytest.raises(InvalidRequest) as caught:
        urls.check_jira_destination_cached("https://jira.example.com", settings)
    assert caught.value.code == "base_url_not_allowed"
