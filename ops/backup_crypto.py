"""Streaming authenticated encryption of backup files (`manage.py backup`, `restore`,
`verify_backup`; docs/operations/backups.md).

A dump can be larger than memory, so it is encrypted in chunks, each sealed with AES-256-GCM
(the STREAM construction: a chunk's nonce is its counter plus a "last chunk" flag, so chunks
cannot be reordered, dropped or the file truncated without decryption failing). The file key
is derived per file (HKDF-SHA256 with a random salt) from `BACKUP_ENCRYPTION_KEY`, so nonces
never repeat across files. The header is authenticated with every chunk.

File layout, format version 1 (all integers big-endian):

    magic "SWYBAK" (6) | version (1) | key id (8) | salt (16) | chunk size (4)
    then chunks: ciphertext length (4) | ciphertext (plaintext + 16-byte GCM tag)
    the last chunk's nonce carries the final flag; nothing may follow it

The key id is the first 8 bytes of HMAC-SHA256(key, "switchyard backup key id"): it tells
which key a file needs (a wrong key is named as such, not reported as corruption) and
reveals nothing about the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
from collections.abc import Iterable, Iterator
from typing import BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"SWYBAK"
FORMAT_VERSION = 1
CHUNK_SIZE = 1 << 20  # 1 MiB of plaintext per chunk
_HEADER = struct.Struct(">6sB8s16sI")
_LENGTH = struct.Struct(">I")
_TAG = 16
_MAX_CHUNK = 64 << 20  # refuse a header asking for absurd chunks (a corrupt file)


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


class BackupCryptoError(Exception):
    """The file cannot be decrypted: wrong key, corrupt or truncated. The message says which."""


def parse_key(encoded: str, *, name: str = "BACKUP_ENCRYPTION_KEY") -> bytes:
    """A key as configured: 32 bytes, base64-encoded."""
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise BackupCryptoError(f"{name} is not valid base64.") from None
    if len(raw) != 32:
        raise BackupCryptoError(f"{name} must be 32 bytes, base64-encoded (it is {len(raw)}).")
    return raw


def key_id(key: bytes) -> bytes:
    return hmac.new(key, b"switchyard backup key id", hashlib.sha256).digest()[:8]


def _file_key(key: bytes, salt: bytes) -> AESGCM:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt,
                   info=b"switchyard backup v1").derive(key)
    return AESGCM(derived)


def _nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


class EncryptingWriter:
    """A file-like sink: `write()` plaintext, `close()` seals the last chunk. Writes the
    ciphertext to `out` as it goes (never more than one chunk in memory)."""

    def __init__(self, out: Writable, key: bytes, *, chunk_size: int = CHUNK_SIZE) -> None:
        self._out = out
        self._chunk_size = chunk_size
        salt = os.urandom(16)
        self._header = _HEADER.pack(MAGIC, FORMAT_VERSION, key_id(key), salt, chunk_size)
        self._aead = _file_key(key, salt)
        self._buffer = bytearray()
        self._counter = 0
        self._closed = False
        out.write(self._header)

    def write(self, data: bytes) -> int:
        self._buffer += data
        # strictly more than a chunk: the last chunk is only known at close()
        while len(self._buffer) > self._chunk_size:
            self._seal(bytes(self._buffer[:self._chunk_size]), last=False)
            del self._buffer[:self._chunk_size]
        return len(data)

    def close(self) -> None:
        if not self._closed:
            self._seal(bytes(self._buffer), last=True)
            self._buffer.clear()
            self._closed = True

    def _seal(self, plaintext: bytes, *, last: bool) -> None:
        sealed = self._aead.encrypt(_nonce(self._counter, last), plaintext, self._header)
        self._out.write(_LENGTH.pack(len(sealed)) + sealed)
        self._counter += 1


def is_encrypted(head: bytes) -> bool:
    return head.startswith(MAGIC)


def file_key_id(source: BinaryIO) -> bytes:
    """The key id in an encrypted file's header (reads the header, then rewinds)."""
    header = source.read(_HEADER.size)
    source.seek(0)
    if len(header) < _HEADER.size or not header.startswith(MAGIC):
        raise BackupCryptoError("The file is not an encrypted Switchyard backup.")
    return _HEADER.unpack(header)[2]


def decrypt_stream(source: BinaryIO, keys: Iterable[bytes]) -> Iterator[bytes]:
    """Yield the plaintext of an encrypted backup, chunk by chunk, each authenticated before
    it is yielded. BackupCryptoError when no key fits, or at the first chunk that is
    corrupt, missing or reordered, at a truncated end, or at data after the last chunk."""
    header = source.read(_HEADER.size)
    if len(header) < _HEADER.size or not header.startswith(MAGIC):
        raise BackupCryptoError("The file is not an encrypted Switchyard backup.")
    _, version, wanted, salt, chunk_size = _HEADER.unpack(header)
    if version != FORMAT_VERSION:
        raise BackupCryptoError(f"Backup format version {version} is not supported "
                                f"(this version reads {FORMAT_VERSION}).")
    if not 0 < chunk_size <= _MAX_CHUNK:
        raise BackupCryptoError("The backup is corrupt: its header is damaged.")
    key = next((k for k in keys if hmac.compare_digest(key_id(k), wanted)), None)
    if key is None:
        raise BackupCryptoError(
            f"Wrong key: the backup was encrypted with key id {wanted.hex()}, which is not "
            "BACKUP_ENCRYPTION_KEY (nor one of BACKUP_DECRYPTION_KEYS).")
    aead = _file_key(key, salt)
    counter = 0
    while True:
        prefix = source.read(_LENGTH.size)
        if len(prefix) < _LENGTH.size:
            raise BackupCryptoError("The backup is truncated: its last chunk is missing.")
        (length,) = _LENGTH.unpack(prefix)
        if not _TAG <= length <= chunk_size + _TAG:
            raise BackupCryptoError(f"The backup is corrupt at chunk {counter}.")
        sealed = source.read(length)
        if len(sealed) < length:
            raise BackupCryptoError("The backup is truncated: its last chunk is cut short.")
        for last in (False, True):
            try:
                plaintext = aead.decrypt(_nonce(counter, last), sealed, header)
            except InvalidTag:
                continue
            break
        else:
            raise BackupCryptoError(f"The backup is corrupt at chunk {counter} "
                                    "(authentication failed).")
        yield plaintext
        if last:
            if source.read(1):
                raise BackupCryptoError("The backup is corrupt: data follows its last chunk.")
            return
        counter += 1
