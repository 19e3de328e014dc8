"""RSA private keys: reading what people paste, making new pairs, keeping them in Secrets Manager.

A private key exists in exactly two places: the caller's request (once) and
Secrets Manager. It never goes to DynamoDB, a response, a log line or an
exception message. Loaded key objects are cached per team in the warm
container, keyed by the public key fingerprint, so a rotated key is reloaded.

Example::

    key = parse_private_key(pem_text)        # raises InvalidRequest with a precise code
    vault = KeyVault(prefix="jira-oauth-broker/prod")
    vault.put_team_key("acme", key)
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from botocore.exceptions import ClientError
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from . import aws
from .errors import InvalidRequest

MIN_KEY_BITS = 2048
ALLOWED_GENERATED_BITS = (2048, 3072, 4096)
_SECRET_TAG = {"Key": "jira-oauth-broker", "Value": "private-key"}


def _key_error(code: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, code=code)


def parse_private_key(text: object) -> rsa.RSAPrivateKey:
    """Load an unencrypted RSA private key in PEM (PKCS#1 or PKCS#8), or raise a precise 400.

    Each common mistake gets its own code: an encrypted key, a public key, a
    certificate, a non-RSA key, an OpenSSH key, garbage, and keys under 2048 bits.
    """
    if not isinstance(text, str) or not text.strip():
        raise _key_error("invalid_private_key", "private_key must be a PEM string starting with -----BEGIN.")
    # Keys pasted through JSON tools often arrive with literal "\n" sequences.
    pem = text.strip().replace("\\n", "\n")
    _reject_known_wrong_pems(pem)
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except TypeError:
        raise _encrypted() from None
    except (ValueError, UnsupportedAlgorithm):  # never echo them: they may quote the input
        raise _key_error(
            "invalid_private_key",
            "private_key is not a readable PEM private key. Paste the whole file, "
            "from -----BEGIN PRIVATE KEY----- (or BEGIN RSA PRIVATE KEY) to the END line.",
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise _key_error(
            "private_key_not_rsa",
            f"private_key is a {_kind(key)} key; Jira's OAuth 1.0a Application Links need an RSA key.",
        )
    if key.key_size < MIN_KEY_BITS:
        raise _key_error(
            "private_key_too_small",
            f"private_key is RSA-{key.key_size}; use at least {MIN_KEY_BITS} bits "
            "(or let the broker generate a key pair).",
        )
    return key


def _reject_known_wrong_pems(pem: str) -> None:
    if "BEGIN CERTIFICATE" in pem:
        raise _key_error(
            "private_key_is_certificate",
            "private_key is a certificate, not a private key. Send the private key the "
            "certificate was made from (-----BEGIN PRIVATE KEY-----).",
        )
    if "PUBLIC KEY" in pem.split("\n", 1)[0] or pem.startswith("ssh-rsa "):
        raise _key_error(
            "private_key_is_public",
            "private_key is a public key. The public key goes into Jira's Application Link; "
            "the broker needs the matching private key.",
        )
    if "BEGIN ENCRYPTED PRIVATE KEY" in pem or "Proc-Type: 4,ENCRYPTED" in pem:
        raise _encrypted()
    if "BEGIN OPENSSH PRIVATE KEY" in pem:
        raise _key_error(
            "private_key_unsupported_format",
            "private_key is in OpenSSH format. Convert it to PEM first: ssh-keygen -p -m PEM -f <keyfile>.",
        )
    if "BEGIN EC PRIVATE KEY" in pem or "BEGIN DSA PRIVATE KEY" in pem:
        raise _key_error(
            "private_key_not_rsa",
            "private_key is not an RSA key; Jira's OAuth 1.0a Application Links need an RSA key.",
        )


def _encrypted() -> InvalidRequest:
    return _key_error(
        "private_key_encrypted",
        "private_key is encrypted with a passphrase. Send it unencrypted "
        "(openssl pkey -in key.pem -out key-plain.pem) over this authenticated API; "
        "the broker keeps it in AWS Secrets Manager.",
    )


def _kind(key: Any) -> str:
    name = type(key).__name__.lower()
    for label, marker in (("EC", "elliptic"), ("EC", "ec"), ("Ed25519", "ed25519"), ("Ed448", "ed448"), ("DSA", "dsa")):
        if marker in name:
            return label
    return "non-RSA"


def generate_private_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    """Make a new RSA key pair of ``bits`` (2048, 3072 or 4096)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def private_pem(key: rsa.RSAPrivateKey) -> str:
    """PKCS#8 PEM, unencrypted: the form kept in Secrets Manager."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_pem(key: rsa.RSAPrivateKey) -> str:
    """The public key as PEM (SubjectPublicKeyInfo), ready to paste into Jira's Application Link."""
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def fingerprint(key: rsa.RSAPrivateKey) -> str:
    """``sha256:<hex>`` of the DER public key; the same as
    ``openssl pkey -in key.pem -pubout -outform DER | sha256sum``."""
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


class KeyVault:
    """Private keys in AWS Secrets Manager, one secret per team (plus a pending generated key).

    Names: ``<prefix>/teams/<team>/keys/<fingerprint>`` (one per key) and ``.../pending-key``.
    Secret names allow only letters, digits and ``/_+=.@-``, so a ``:`` in a
    team id becomes ``+`` (which team ids cannot hold, so the mapping is 1:1).
    """

    def __init__(self, prefix: str, client: Any | None = None, kms_key: str = "") -> None:
        self.prefix = prefix
        self._client = client
        self._kms = {"KmsKeyId": kms_key} if kms_key else {}

    @property
    def client(self) -> Any:
        return self._client or aws.client("secretsmanager")

    def _team_prefix(self, team: str) -> str:
        return f"{self.prefix}/teams/{team.replace(':', '+')}"

    def team_key_name(self, team: str) -> str:
        """The one name keys were kept under before each key got its own (still read for old setups)."""
        return f"{self._team_prefix(team)}/private-key"

    def key_name(self, team: str, key_fingerprint: str) -> str:
        """Each key has its own secret, named by its fingerprint, so the integration record can name
        exactly the key that signs: writing a new key never changes the one in use."""
        return f"{self._team_prefix(team)}/keys/{key_fingerprint.removeprefix('sha256:')[:40]}"

    def pending_key_name(self, team: str) -> str:
        return f"{self._team_prefix(team)}/pending-key"

    # -- team keys ---------------------------------------------------------
    def put_team_key(self, team: str, key: rsa.RSAPrivateKey) -> str:
        """Keep ``key`` under its own name; returns the name, for the integration record."""
        key_fingerprint = fingerprint(key)
        name = self.key_name(team, key_fingerprint)
        self._put(name, private_pem(key))
        _loaded_keys.put(team, key_fingerprint, key)
        return name

    def team_key(self, team: str, expected_fingerprint: str, name: str | None = None) -> rsa.RSAPrivateKey | None:
        """The key named ``name`` (default: the old single name), loaded; from the warm cache when
        its fingerprint matches. None when the secret is gone or holds another key."""
        cached = _loaded_keys.get(team, expected_fingerprint)
        if cached is not None:
            return cached
        pem = self._get(name or self.team_key_name(team))
        if pem is None:
            return None
        # Only keys parse_private_key checked (or the broker made) are ever stored: skip OpenSSL's RSA
        # consistency check, ~30 ms of every cold proxy call. The fingerprint check below still holds.
        key = serialization.load_pem_private_key(pem.encode(), password=None, unsafe_skip_rsa_key_validation=True)
        assert isinstance(key, rsa.RSAPrivateKey)
        if fingerprint(key) != expected_fingerprint:
            return None  # never sign with a key other than the one the integration shows
        _loaded_keys.put(team, expected_fingerprint, key)
        return key

    # -- OAuth 2.0 client secrets ---------------------------------------------
    def client_secret_name(self, team: str, client_id: str, secret: str) -> str:
        """Each client id and secret pair has its own name (a hash, never the secret), as keys do:
        storing a new secret never changes the one in use."""
        digest = hashlib.sha256(f"{client_id}\0{secret}".encode()).hexdigest()[:40]
        return f"{self._team_prefix(team)}/clients/{digest}"

    def put_client_secret(self, team: str, client_id: str, secret: str) -> str:
        """Keep an OAuth 2.0 client secret; returns its name, for the integration record."""
        name = self.client_secret_name(team, client_id, secret)
        self._put(name, secret)
        _client_secrets[name] = secret
        return name

    def client_secret(self, name: str) -> str | None:
        """The secret kept under ``name``; cached warm (a name's value never changes: it is its hash)."""
        cached = _client_secrets.get(name)
        if cached is not None:
            return cached
        value = self._get(name)
        if value is not None:
            _client_secrets[name] = value
        return value

    def put_pending_key(self, team: str, key: rsa.RSAPrivateKey) -> None:
        self._put(self.pending_key_name(team), private_pem(key))

    def pending_key(self, team: str) -> rsa.RSAPrivateKey | None:
        pem = self._get(self.pending_key_name(team))
        if pem is None:
            return None
        key = serialization.load_pem_private_key(pem.encode(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key

    def delete_pending_key(self, team: str) -> None:
        self._delete(self.pending_key_name(team))

    def delete_key(self, name: str) -> None:
        """Schedule one key's secret for deletion (7-day recovery window). Idempotent."""
        self._delete(name)

    def delete_team(self, team: str, key_names: list[str]) -> None:
        """Schedule the team's keys (``key_names``, the old single name, the pending key) for deletion."""
        for name in {*key_names, self.team_key_name(team), self.pending_key_name(team)}:
            self._delete(name)
        _loaded_keys.drop(team)

    # -- any secret (also the broker's own link-signing key) --------------
    def get_or_create(self, name: str, make_value: Any) -> str:
        """Read a secret, creating it with ``make_value()`` if it does not exist yet."""
        value = self._get(name)
        if value is not None:
            return value
        try:
            self.client.create_secret(Name=name, SecretString=make_value(), Tags=[_SECRET_TAG], **self._kms)
        except ClientError as error:
            if _code(error) not in {"ResourceExistsException", "InvalidRequestException"}:
                raise
            self._restore_if_deleted(name)
        value = self._get(name)
        assert value is not None
        return value

    def _put(self, name: str, value: str) -> None:
        """Write a secret's value, creating or restoring the secret as needed.

        A deleted secret's name stays taken for its recovery window; adding a
        team again within it restores the secret, then overwrites its value.
        Setups are rare, so one DescribeSecret first keeps this plain.
        """
        try:
            described = self.client.describe_secret(SecretId=name)
        except ClientError as error:
            if _code(error) != "ResourceNotFoundException":
                raise
            try:
                self.client.create_secret(Name=name, SecretString=value, Tags=[_SECRET_TAG], **self._kms)
                return
            except ClientError as create_error:
                if _code(create_error) != "ResourceExistsException":  # a concurrent create won
                    raise
                described = self.client.describe_secret(SecretId=name)
        if described.get("DeletedDate"):
            self.client.restore_secret(SecretId=name)
        self.client.put_secret_value(SecretId=name, SecretString=value)

    def _restore_if_deleted(self, name: str) -> None:
        described = self.client.describe_secret(SecretId=name)
        if described.get("DeletedDate"):
            self.client.restore_secret(SecretId=name)

    def _get(self, name: str) -> str | None:
        try:
            response = self.client.get_secret_value(SecretId=name)
        except ClientError as error:
            if _code(error) in {"ResourceNotFoundException", "InvalidRequestException"}:
                return None  # never created, or scheduled for deletion
            raise
        return str(response["SecretString"])

    def _delete(self, name: str) -> None:
        try:
            self.client.delete_secret(SecretId=name, RecoveryWindowInDays=7)
        except ClientError as error:
            if _code(error) not in {"ResourceNotFoundException", "InvalidRequestException"}:
                raise


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class _LoadedKeyCache:
    """Loaded key objects per team: parsing a PEM costs ~45 ms, signing with a loaded key ~1 ms."""

    def __init__(self) -> None:
        self._keys: dict[str, tuple[str, rsa.RSAPrivateKey]] = {}
        self._lock = threading.Lock()

    def get(self, team: str, expected_fingerprint: str) -> rsa.RSAPrivateKey | None:
        with self._lock:
            entry = self._keys.get(team)
        if entry and entry[0] == expected_fingerprint:
            return entry[1]
        return None

    def put(self, team: str, key_fingerprint: str, key: rsa.RSAPrivateKey) -> None:
        with self._lock:
            self._keys[team] = (key_fingerprint, key)

    def drop(self, team: str) -> None:
        with self._lock:
            self._keys.pop(team, None)


_loaded_keys = _LoadedKeyCache()
_client_secrets: dict[str, str] = {}  # by secret name; each name holds one value for good
