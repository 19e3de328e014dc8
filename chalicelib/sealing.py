"""Envelope encryption for the tokens kept in DynamoDB, so a leaked table export alone reveals none.

A dict of strings is sealed as JSON with AES-256-GCM under a data key from AWS KMS
(``GenerateDataKey`` with the encryption context ``jira-oauth-broker = connection-tokens``). The
sealed string holds that data key as KMS encrypted it; opening needs ``kms:Decrypt`` on the
broker's key, which no table export gives. ``bound_to`` (the record's owner, e.g. ``acme/alice``)
is the cipher's associated data: a value copied onto another team's or user's record does not open.

A process asks KMS for one data key and seals with it until it is 12 hours old or has sealed 2**20
values (random 96-bit nonces stay far below AES-GCM's 2**32 per key). Decrypted data keys are kept
per encrypted key (at most 64), so a warm container calls KMS neither to seal nor to open. Decrypt
names the configured key, as KMS recommends: values sealed under another key do not open.

Format: ``v1.<data key encrypted by KMS>.<12-byte nonce>.<ciphertext and tag>``, base64url, no padding.

Example::

    sealer = sealer_for(settings)                                         # one per KMS key and process
    sealed = sealer.seal({"access_token": "t0k3n"}, bound_to="acme/alice")   # 'v1.AQIDAHh...'
    sealer.open(sealed, bound_to="acme/alice")                             # {'access_token': 't0k3n'}
    sealer.open(sealed, bound_to="acme/bob")                               # raises SealedValueUnreadable
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import aws
from .config import Settings
from .errors import BrokerError, SealedValueUnreadable, StorageUnavailable
from .logs import logger

VERSION = "v1"
ENCRYPTION_CONTEXT = {"jira-oauth-broker": "connection-tokens"}
NONCE_BYTES = 12
_TAG_BYTES = 16
_SEALED = re.compile(r"v1\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{16})\.([A-Za-z0-9_-]+)")  # 12 bytes: 16 characters
# KMS's answers for a key that is missing, disabled, pending deletion or not the role's to use: set-up, not luck.
_KEY_PROBLEMS = frozenset(
    {"AccessDeniedException", "NotFoundException", "DisabledException", "KMSInvalidStateException"}
) | {"InvalidKeyUsageException"}
# Decrypt's answers for an encrypted data key that is altered, or was made under another key or context.
_UNREADABLE = frozenset({"InvalidCiphertextException", "IncorrectKeyException"})
_KMS_TROUBLE = "The broker's key service (AWS KMS) did not answer just now. Try again in a few seconds."


@dataclass(frozen=True)
class _DataKey:
    blob: bytes  # the data key as KMS encrypted it
    cipher: AESGCM
    made: float  # time.monotonic()


class Sealer:
    """Seals and opens dicts of strings under data keys of the KMS key ``kms_key`` (an id, ARN or alias)."""

    max_seals_per_key = 2**20
    max_key_age_seconds = 12 * 3600.0
    max_cached_keys = 64

    def __init__(self, kms_key: str, client: Any | None = None) -> None:
        if not kms_key:
            raise ValueError("Sealer needs a KMS key id, ARN or alias")
        self.kms_key = kms_key
        self._client = client
        self._sealing_lock = threading.Lock()  # one GenerateDataKey at a time, and the seal count
        self._current: _DataKey | None = None
        self._seals = 0
        self._opened: OrderedDict[bytes, AESGCM] = OrderedDict()
        self._opened_lock = threading.Lock()

    @property
    def client(self) -> Any:
        return self._client or aws.client("kms")

    def seal(self, values: dict[str, str], *, bound_to: str) -> str:
        """``values`` as one sealed ASCII string that opens only with the same ``bound_to``."""
        plaintext = _encode(values)
        key = self._sealing_key()
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = key.cipher.encrypt(nonce, plaintext, _associated(bound_to))
        return ".".join((VERSION, _b64(key.blob), _b64(nonce), _b64(ciphertext)))

    def open(self, sealed: str, *, bound_to: str) -> dict[str, str]:
        """The dict :meth:`seal` sealed for ``bound_to``.

        Raises:
            SealedValueUnreadable: not a sealed value, altered, sealed for another ``bound_to`` or key.
            StorageUnavailable: KMS throttled, failed or did not answer.
            BrokerError: the KMS key is missing, disabled or not the role's to use (``tokens_key_unusable``).
        """
        blob, nonce, ciphertext = _parts(sealed)
        cipher = self._opening_cipher(blob)
        try:
            plaintext = cipher.decrypt(nonce, ciphertext, _associated(bound_to))
        except InvalidTag:
            raise SealedValueUnreadable() from None
        return _decode(plaintext)

    # -- data keys -----------------------------------------------------------------------------------
    def _sealing_key(self) -> _DataKey:
        with self._sealing_lock:
            key = self._current
            if (
                key is None
                or self._seals >= self.max_seals_per_key
                or time.monotonic() - key.made >= self.max_key_age_seconds
            ):
                answer = self._kms(
                    "generate_data_key", KeyId=self.kms_key, KeySpec="AES_256", EncryptionContext=ENCRYPTION_CONTEXT
                )
                key = self._current = _DataKey(answer["CiphertextBlob"], AESGCM(answer["Plaintext"]), time.monotonic())
                self._seals = 0
                self._remember(key.blob, key.cipher)
            self._seals += 1
            return key

    def _opening_cipher(self, blob: bytes) -> AESGCM:
        with self._opened_lock:
            cipher = self._opened.get(blob)
            if cipher is not None:
                self._opened.move_to_end(blob)
                return cipher
        answer = self._kms("decrypt", CiphertextBlob=blob, KeyId=self.kms_key, EncryptionContext=ENCRYPTION_CONTEXT)
        if len(answer["Plaintext"]) != 32:
            raise SealedValueUnreadable()
        cipher = AESGCM(answer["Plaintext"])
        self._remember(blob, cipher)
        return cipher

    def _remember(self, blob: bytes, cipher: AESGCM) -> None:
        with self._opened_lock:
            self._opened[blob] = cipher
            self._opened.move_to_end(blob)
            while len(self._opened) > self.max_cached_keys:
                self._opened.popitem(last=False)

    def _kms(self, operation: str, **params: Any) -> dict[str, Any]:
        try:
            return dict(getattr(self.client, operation)(**params))
        except (ClientError, BotoCoreError) as error:
            details = {**aws.trouble_details(error), "kms_key": self.kms_key}
            if aws.storage_trouble(error):
                logger.warning("KMS could not be used just now", extra=details)
                raise StorageUnavailable(_KMS_TROUBLE) from error
            code = str(error.response.get("Error", {}).get("Code", "")) if isinstance(error, ClientError) else ""
            if operation == "decrypt" and code in _UNREADABLE:
                raise SealedValueUnreadable() from error
            if code in _KEY_PROBLEMS:
                logger.error("the tokens' KMS key could not be used", extra=details)
                raise _key_unusable(self.kms_key, code) from error
            raise


def _key_unusable(kms_key: str, code: str) -> BrokerError:
    return BrokerError(
        f"The broker could not use its KMS key {kms_key} for connection tokens (AWS KMS answered {code}). "
        "Check that the key exists and is enabled in this account and region, that BROKER_TOKENS_KMS_KEY "
        "(or BROKER_SECRETS_KMS_KEY) names it, and that the API function's role may call kms:GenerateDataKey "
        "and kms:Decrypt on it with the encryption context jira-oauth-broker=connection-tokens.",
        code="tokens_key_unusable",
    )


# -- the format ------------------------------------------------------------------------------------------
def is_sealed(value: object) -> bool:
    """Whether ``value`` has the form of a sealed value (it may still not open)."""
    return isinstance(value, str) and _SEALED.fullmatch(value) is not None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _parts(sealed: object) -> tuple[bytes, bytes, bytes]:
    match = _SEALED.fullmatch(sealed) if isinstance(sealed, str) else None
    if match is None:
        raise SealedValueUnreadable()
    try:
        blob, nonce, ciphertext = (base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)) for part in match.groups())
    except ValueError:
        raise SealedValueUnreadable() from None
    # Only the one canonical spelling: base64 ignores a last character's spare bits, and any change must show.
    if (_b64(blob), _b64(nonce), _b64(ciphertext)) != match.groups() or len(ciphertext) < _TAG_BYTES:
        raise SealedValueUnreadable()
    return blob, nonce, ciphertext


def _associated(bound_to: str) -> bytes:
    if not isinstance(bound_to, str) or not bound_to:
        raise ValueError("bound_to must name the record the value belongs to, e.g. 'acme/alice'")
    return bound_to.encode("utf-8")


def _str_dict(values: object) -> bool:
    return isinstance(values, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in values.items())


def _encode(values: dict[str, str]) -> bytes:
    if not _str_dict(values):
        raise TypeError("Sealer.seal takes a dict of str to str")  # never the values: they are secrets
    return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _decode(plaintext: bytes) -> dict[str, str]:
    try:
        values = json.loads(plaintext)
    except ValueError:
        raise SealedValueUnreadable() from None
    if not _str_dict(values):
        raise SealedValueUnreadable()
    return dict(values)


# -- one Sealer per key, per process ----------------------------------------------------------------------
_sealers: dict[str, Sealer] = {}
_sealers_lock = threading.Lock()


def sealer_for(settings: Settings) -> Sealer:
    """The process's Sealer for ``settings.tokens_kms_key``: its data keys stay warm between requests."""
    with _sealers_lock:
        sealer = _sealers.get(settings.tokens_kms_key)
        if sealer is None:
            sealer = _sealers[settings.tokens_kms_key] = Sealer(settings.tokens_kms_key)
        return sealer


def forget_cached_sealers() -> None:
    """Tests start a fresh moto per test; drop data keys made by an old one."""
    with _sealers_lock:
        _sealers.clear()
