"""Client-side encryption (placeholder until the encryption work lands)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import Config
    from .envelope import Decryptor, Encryptor


def make_encryptor(cfg: Config) -> Encryptor:
    raise ConfigError("encryption is not supported by this walship version")


def make_decryptor(cfg: Config, enc: dict[str, Any], where: str) -> Decryptor:
    raise ConfigError(f"{where} is encrypted; this walship version cannot decrypt")
