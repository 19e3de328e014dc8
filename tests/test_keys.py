"""Reading pasted private keys: each common mistake gets its own code and a message without the key."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from chalicelib.errors import InvalidRequest
from chalicelib.keys import fingerprint, parse_private_key, public_pem


def _code(text: object) -> str:
    with pytest.raises(InvalidRequest) as caught:
        parse_private_key(text)
    assert "MII" not in caught.value.message  # no key material in the message
    return caught.value.code


def test_pkcs8_and_pkcs1_both_load_to_the_same_key(
    private_pem: str, pkcs1_pem: str, rsa_key: rsa.RSAPrivateKey
) -> None:
    assert "BEGIN PRIVATE KEY" in private_pem and "BEGIN RSA PRIVATE KEY" in pkcs1_pem
    assert fingerprint(parse_private_key(private_pem)) == fingerprint(rsa_key)
    assert fingerprint(parse_private_key(pkcs1_pem)) == fingerprint(rsa_key)


def test_literal_backslash_n_from_json_tools_is_accepted(private_pem: str, rsa_key: rsa.RSAPrivateKey) -> None:
    assert fingerprint(parse_private_key(private_pem.replace("\n", "\\n"))) == fingerprint(rsa_key)


def test_encrypted_keys_pkcs8_and_pkcs1(rsa_key: rsa.RSAPrivateKey) -> None:
    encryption = serialization.BestAvailableEncryption(b"passphrase")
    pkcs8 = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption).decode()
    pkcs1 = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, encryption
    ).decode()
    assert _code(pkcs8) == "private_key_encrypted"
    assert _code(pkcs1) == "private_key_encrypted"


def test_public_keys_are_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    assert _code(public_pem(rsa_key)) == "private_key_is_public"
    pkcs1_public = rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    assert _code(pkcs1_public.decode()) == "private_key_is_public"
    openssh = rsa_key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    assert _code(openssh.decode()) == "private_key_is_public"


def test_ec_and_ed25519_keys_are_not_rsa() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    for fmt in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL):
        pem = ec_key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()
        assert _code(pem) == "private_key_not_rsa"
    ed = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert _code(ed.decode()) == "private_key_not_rsa"


def test_certificates_are_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jira.example.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(rsa_key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(rsa_key, hashes.SHA256())
    )
    assert _code(cert.public_bytes(serialization.Encoding.PEM).decode()) == "private_key_is_certificate"


def test_openssh_private_keys_get_a_conversion_hint(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    with pytest.raises(InvalidRequest) as caught:
        parse_private_key(pem)
    assert caught.value.code == "private_key_unsupported_format"
    assert "ssh-keygen" in caught.value.message


@pytest.mark.parametrize("garbage", ["hello", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", 42, ""])
def test_garbage_is_refused(garbage: object) -> None:
    assert _code(garbage) == "invalid_private_key"


def test_keys_under_2048_bits_are_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = small.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with pytest.raises(InvalidRequest) as caught:
        parse_private_key(pem)
    assert caught.value.code == "private_key_too_small"
    assert "1024" in caught.value.message


def test_fingerprint_is_sha256_of_the_der_public_key(rsa_key: rsa.RSAPrivateKey) -> None:
    import hashlib

    der = rsa_key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert fingerprint(rsa_key) == "sha256:" + hashlib.sha256(der).hexdigest()
