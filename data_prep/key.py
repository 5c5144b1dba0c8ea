"""The partners' shared secret: generation, loading, and a check hash that proves which key without revealing it."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from data_prep.errors import InputError

KEY_BYTES = 32


def generate_key(path: str | Path, overwrite: bool = False) -> Path:
    """Write a fresh random 32-byte key (hex text) readable by the owner only (mode 0600)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists; refusing to overwrite a key (pass --force to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(KEY_BYTES) + "\n")
    os.chmod(path, 0o600)
    return path


def load_key(path: str | Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"secret key {path} not found; the partners create one with `data-prep keygen --out {path}`")
    try:
        text = path.read_bytes().decode("ascii").strip()
        key = bytes.fromhex(text)
    except (UnicodeDecodeError, ValueError):
        raise InputError(f"secret key {path} is not hex text; was it written by `data-prep keygen`?") from None
    except OSError as exc:
        raise InputError(f"secret key {path} cannot be read ({exc.strerror or exc})") from None
    if len(key) != KEY_BYTES:
        raise InputError(f"secret key {path} holds {len(key)} bytes, expected {KEY_BYTES}")
    return key


def key_check_hash(key: bytes) -> str:
    """A public fingerprint of the key: equal keys give equal hashes, the hash does not reveal the key."""
    return hmac.new(key, b"fedqsar key check v1", hashlib.sha256).hexdigest()
