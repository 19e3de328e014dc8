"""chalicelib/sealing.py: tokens sealed under KMS data keys, against moto's KMS (the key made by real API calls).

KMS calls are counted with a botocore event hook on the real (moto) client the Sealer is given.
"""

from __future__ import annotations

import base64
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto import mock_aws

from chalicelib import aws, sealing
from chalicelib.config import load_settings
from chalicelib.errors import BrokerError, SealedValueUnreadable, StorageUnavailable
from chalicelib.sealing import Sealer, is_sealed, sealer_for
from scripts.local_aws import create_kms_key, kms_alias
from tests import faultyaws
from tests.faultyaws import FaultyAWS

faulty_aws = faultyaws.faulty_aws

KEY = kms_alias("local")  # alias/jira-oauth-broker-local
TOKEN = "oauth-access-token-0123456789abcdef"
SECRET = "oauth-token-secret-fedcba9876543210"
VALUES = {"access_token": TOKEN, "token_secret": SECRET}


@pytest.fixture
def kms(settings_env: None) -> Iterator[Any]:
    """moto's KMS with the local stage's key, created through the API as make run does."""
    aws.reset_clients()
    sealing.forget_cached_sealers()
    with mock_aws():
        client = boto3.client("kms")
        create_kms_key(client, "local")
        yield client
    aws.reset_clients()
    sealing.forget_cached_sealers()


@pytest.fixture
def calls(kms: Any) -> Counter[str]:
    """KMS operations the client made, by name."""
    counted: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        counted[model.name] += 1

    kms.meta.events.register("before-call.kms", count)
    return counted


def _parts(sealed: str) -> list[str]:
    return sealed.split(".")


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _other_char(char: str) -> str:
    return "A" if char != "A" else "B"


# -- sealing and opening -----------------------------------------------------------------------------------
def test_a_sealed_value_opens_for_its_record_and_shows_no_token(kms: Any) -> None:
    sealer = Sealer(KEY, client=kms)
    values = {**VALUES, "note": "ünïcode ✓"}
    sealed = sealer.seal(values, bound_to="acme/alice")
    assert sealed.isascii() and is_sealed(sealed)
    version, blob, nonce, ciphertext = _parts(sealed)
    assert version == "v1" and len(_unb64(nonce)) == 12 and blob and len(_unb64(ciphertext)) > 16
    for secret in (TOKEN, SECRET, base64.b64encode(TOKEN.encode()).decode(), "access_token"):
        assert secret not in sealed
    assert sealer.open(sealed, bound_to="acme/alice") == values
    # A Sealer that never saw the data key opens it too (KMS Decrypt of the blob).
    assert Sealer(KEY, client=kms).open(sealed, bound_to="acme/alice") == values
    assert not is_sealed(TOKEN) and not is_sealed(None) and not is_sealed("v1.abc")


def test_one_data_key_per_process_for_many_seals(kms: Any, calls: Counter[str]) -> None:
    sealer = Sealer(KEY, client=kms)
    sealed = [sealer.seal({"access_token": f"{TOKEN}-{i}"}, bound_to=f"acme/user{i}") for i in range(200)]
    assert calls == Counter({"GenerateDataKey": 1})
    assert len({_parts(s)[1] for s in sealed}) == 1  # one encrypted data key
    assert len({_parts(s)[2] for s in sealed}) == 200  # a fresh nonce each time
    for i, value in enumerate(sealed):
        assert sealer.open(value, bound_to=f"acme/user{i}") == {"access_token": f"{TOKEN}-{i}"}
    assert calls == Counter({"GenerateDataKey": 1})  # its own data key: no Decrypt


def test_threads_sealing_at_once_share_one_data_key(kms: Any, calls: Counter[str]) -> None:
    sealer, start, sealed = Sealer(KEY, client=kms), threading.Barrier(8), []

    def seal() -> None:
        start.wait()
        sealed.append(sealer.seal(VALUES, bound_to="acme/alice"))

    threads = [threading.Thread(target=seal) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(sealed) == 8 and calls["GenerateDataKey"] == 1


def test_a_new_container_opens_with_one_decrypt_then_from_its_cache(kms: Any, calls: Counter[str]) -> None:
    first = Sealer(KEY, client=kms)
    sealed = [first.seal({"n": str(i)}, bound_to="acme/alice") for i in range(5)]
    calls.clear()
    second = Sealer(KEY, client=kms)  # a new container
    assert [second.open(s, bound_to="acme/alice") for s in sealed] == [{"n": str(i)} for i in range(5)]
    assert calls == Counter({"Decrypt": 1})
    for value in sealed * 3:
        second.open(value, bound_to="acme/alice")
    assert calls == Counter({"Decrypt": 1})


def test_data_keys_are_renewed_by_count_and_age(kms: Any, calls: Counter[str]) -> None:
    sealer = Sealer(KEY, client=kms)
    sealer.max_seals_per_key = 3
    sealed = [sealer.seal({"n": str(i)}, bound_to="acme/alice") for i in range(7)]
    assert calls["GenerateDataKey"] == 3 and len({_parts(s)[1] for s in sealed}) == 3
    assert [sealer.open(s, bound_to="acme/alice")["n"] for s in sealed] == [str(i) for i in range(7)]
    assert calls["Decrypt"] == 0  # every one of its own data keys is still cached
    aged = Sealer(KEY, client=kms)
    aged.max_key_age_seconds = 0.0
    calls.clear()
    for _ in range(3):
        aged.seal(VALUES, bound_to="acme/alice")
    assert calls == Counter({"GenerateDataKey": 3})


def test_the_decrypted_key_cache_is_bounded(kms: Any, calls: Counter[str]) -> None:
    maker = Sealer(KEY, client=kms)
    maker.max_seals_per_key = 1  # a new data key for each value
    sealed = [maker.seal({"n": str(i)}, bound_to="acme/alice") for i in range(4)]
    opener = Sealer(KEY, client=kms)
    opener.max_cached_keys = 2
    calls.clear()
    for value in sealed:
        opener.open(value, bound_to="acme/alice")
    assert calls["Decrypt"] == 4
    opener.open(sealed[3], bound_to="acme/alice")  # among the two kept
    assert calls["Decrypt"] == 4
    opener.open(sealed[0], bound_to="acme/alice")  # forgotten
    assert calls["Decrypt"] == 5


# -- what does not open ------------------------------------------------------------------------------------
def _assert_unreadable(sealer: Sealer, sealed: str, bound_to: str = "acme/alice") -> SealedValueUnreadable:
    with pytest.raises(SealedValueUnreadable) as caught:
        sealer.open(sealed, bound_to=bound_to)
    error = caught.value
    assert error.code == "sealed_value_unreadable" and error.status == 500
    assert "could not be decrypted" in error.message and "Connect the Jira account again" in error.message
    for secret in filter(None, (sealed, TOKEN, SECRET)):
        assert secret not in error.message and secret not in str(error)
    return error


@pytest.mark.parametrize("other", ["acme/bob", "globex/alice", "acme/alice ", "ACME/alice"])
def test_a_value_copied_to_another_record_does_not_open(kms: Any, other: str) -> None:
    sealer = Sealer(KEY, client=kms)
    sealed = sealer.seal(VALUES, bound_to="acme/alice")
    _assert_unreadable(sealer, sealed, bound_to=other)
    assert sealer.open(sealed, bound_to="acme/alice") == VALUES


@pytest.mark.parametrize(
    ("part", "position"),
    [(1, -1), (1, 60), (2, 0), (2, 15), (3, 0), (3, 10)],
    ids=["blob-end", "blob-middle", "nonce-start", "nonce-end", "ciphertext-start", "ciphertext-middle"],
)
def test_an_altered_value_does_not_open(kms: Any, part: int, position: int) -> None:
    sealer = Sealer(KEY, client=kms)
    sealed = sealer.seal(VALUES, bound_to="acme/alice")
    parts = _parts(sealed)
    chars = list(parts[part])
    chars[position] = _other_char(chars[position])
    parts[part] = "".join(chars)
    # The blob is checked by KMS (a new Sealer has nothing cached); nonce and ciphertext by AES-GCM.
    _assert_unreadable(Sealer(KEY, client=kms), ".".join(parts))
    _assert_unreadable(sealer, ".".join(parts))


def test_parts_of_two_values_do_not_mix(kms: Any) -> None:
    first, second = Sealer(KEY, client=kms), Sealer(KEY, client=kms)
    a = _parts(first.seal(VALUES, bound_to="acme/alice"))
    b = _parts(second.seal(VALUES, bound_to="acme/alice"))
    _assert_unreadable(first, ".".join([a[0], b[1], a[2], a[3]]))  # another data key
    _assert_unreadable(first, ".".join([a[0], a[1], b[2], a[3]]))  # another nonce


def test_another_spelling_of_the_same_bytes_does_not_open(kms: Any) -> None:
    """base64 ignores a last character's spare bits: a changed character must still not open."""
    sealer = Sealer(KEY, client=kms)
    sealed = sealer.seal({"k": "v"}, bound_to="acme/alice")  # {"k":"v"}: 9 bytes + 16 of tag = 25
    parts = _parts(sealed)
    assert len(_unb64(parts[3])) % 3 == 1  # its last character carries 4 spare bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(parts[3][-1])
    parts[3] = parts[3][:-1] + alphabet[last | 1]
    assert _unb64(parts[3]) == _unb64(_parts(sealed)[3]) and ".".join(parts) != sealed
    _assert_unreadable(sealer, ".".join(parts))


@pytest.mark.parametrize(
    "garbage", ["", TOKEN, "v1.", "v1...", "v2.AAAA.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA", "v1.AAAA.AAAA.AAAA"]
)
def test_garbage_does_not_open(kms: Any, calls: Counter[str], garbage: str) -> None:
    _assert_unreadable(Sealer(KEY, client=kms), garbage)
    assert calls == Counter()  # refused before any KMS call


def test_seal_takes_only_a_dict_of_strings_and_a_record(kms: Any) -> None:
    sealer = Sealer(KEY, client=kms)
    with pytest.raises(TypeError) as caught:
        sealer.seal({"access_token": TOKEN, "expires": 3600}, bound_to="acme/alice")  # type: ignore[dict-item]
    assert TOKEN not in str(caught.value)
    with pytest.raises(ValueError, match="bound_to"):
        sealer.seal(VALUES, bound_to="")


# -- KMS trouble and a missing key ---------------------------------------------------------------------
def test_kms_unreachable_is_storage_unavailable(kms: Any, capsys: pytest.CaptureFixture[str]) -> None:
    sealed = Sealer(KEY, client=kms).seal(VALUES, bound_to="acme/alice")
    config = Config(connect_timeout=1, read_timeout=1, retries={"total_max_attempts": 1})
    closed = boto3.client("kms", endpoint_url="http://127.0.0.1:9", config=config)  # loopback, nothing listens
    sealer = Sealer(KEY, client=closed)
    for attempt in (
        lambda: sealer.seal(VALUES, bound_to="acme/alice"),
        lambda: sealer.open(sealed, bound_to="acme/alice"),
    ):
        with pytest.raises(StorageUnavailable) as caught:
            attempt()
        assert caught.value.status == 503 and caught.value.code == "storage_unavailable"
        assert caught.value.retry_after and "KMS" in caught.value.message
    logged = capsys.readouterr()
    for secret in (sealed, TOKEN, SECRET, _parts(sealed)[1]):
        assert secret not in logged.out + logged.err


@pytest.mark.parametrize("mode", ["throttle", "error", "cut"])
def test_kms_throttling_failing_or_cut_off_is_storage_unavailable(faulty_aws: FaultyAWS, mode: str) -> None:
    """KMS through the fault-injecting proxy in front of moto server (its key made by the fixture)."""
    client = boto3.client("kms", endpoint_url=faulty_aws.endpoint, config=Config(retries={"total_max_attempts": 2}))
    sealed = Sealer(KEY, client=client).seal(VALUES, bound_to="acme/alice")
    sealer = Sealer(KEY, client=client)
    with faulty_aws.failing(mode, service="kms"):
        with pytest.raises(StorageUnavailable):
            sealer.open(sealed, bound_to="acme/alice")
        with pytest.raises(StorageUnavailable):
            sealer.seal(VALUES, bound_to="acme/alice")
    assert {(c.service, c.operation) for c in faulty_aws.calls if c.failed} == {
        ("kms", "Decrypt"),
        ("kms", "GenerateDataKey"),
    }
    assert sealer.open(sealed, bound_to="acme/alice") == VALUES  # healed: the same Sealer works again
    assert not any(c.mutating for c in faulty_aws.calls)  # Decrypt and GenerateDataKey change nothing


def test_a_missing_key_is_a_500_naming_it(kms: Any) -> None:
    sealed = Sealer(KEY, client=kms).seal(VALUES, bound_to="acme/alice")
    missing = Sealer("alias/jira-oauth-broker-nowhere", client=kms)
    for attempt in (
        lambda: missing.seal(VALUES, bound_to="acme/alice"),
        lambda: missing.open(sealed, bound_to="acme/alice"),
    ):
        with pytest.raises(BrokerError) as caught:
            attempt()
        error = caught.value
        assert type(error) is BrokerError and error.status == 500 and error.code == "tokens_key_unusable"
        assert "alias/jira-oauth-broker-nowhere" in error.message and "NotFoundException" in error.message
        assert "kms:Decrypt" in error.message and "BROKER_TOKENS_KMS_KEY" in error.message
        assert sealed not in error.message and TOKEN not in error.message


# -- settings and the per-process Sealer ------------------------------------------------------------------
def test_the_tokens_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BROKER_TOKENS_KMS_KEY", "BROKER_SECRETS_KMS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BROKER_STAGE", "prod")
    assert load_settings().tokens_kms_key == "alias/jira-oauth-broker-prod"
    monkeypatch.setenv("BROKER_SECRETS_KMS_KEY", "1234abcd-12ab-34cd-56ef-1234567890ab")  # the stack's BrokerKey
    assert load_settings().tokens_kms_key == "1234abcd-12ab-34cd-56ef-1234567890ab"
    monkeypatch.setenv("BROKER_TOKENS_KMS_KEY", "alias/tokens")
    assert load_settings().tokens_kms_key == "alias/tokens"


def test_sealer_for_keeps_one_sealer_per_key(kms: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.tokens_kms_key == KEY
    sealer = sealer_for(settings)
    assert sealer_for(load_settings()) is sealer and sealer.kms_key == KEY
    sealed = sealer.seal(VALUES, bound_to="acme/alice")  # through aws.client("kms"): moto as well
    assert sealer_for(load_settings()).open(sealed, bound_to="acme/alice") == VALUES
    monkeypatch.setenv("BROKER_TOKENS_KMS_KEY", "alias/other")
    assert sealer_for(load_settings()) is not sealer
    sealing.forget_cached_sealers()
    monkeypatch.delenv("BROKER_TOKENS_KMS_KEY")
    assert sealer_for(load_settings()) is not sealer
