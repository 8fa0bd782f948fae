"""Settings of the HTTP API: validated once, from arguments and ``CAS_STORE_*`` variables.

Insecure combinations are refused here, so that no code path can start a server that
listens beyond this machine without a token.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Annotated, Any

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIB = 1024 * 1024
LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})


def _default_store() -> str:
    from .. import default_store_path

    return str(default_store_path())


def is_loopback(host: str) -> bool:
    """Return True only if host names this machine's loopback interface."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # any other host name may resolve to a public address


class InsecureSettings(ValueError):
    """The settings would expose the store beyond this machine without a token."""


class Settings(BaseSettings):
    """How ``cas-store serve`` runs: store, address, token, CORS, limits.

    Every field can be set from the environment with the ``CAS_STORE_`` prefix (the store
    path also from ``CAS_STORE``, like the rest of the command line).
    """

    model_config = SettingsConfigDict(
        env_prefix="CAS_STORE_", populate_by_name=True, extra="ignore",
    )

    store: str = Field(
        default_factory=_default_store,
        validation_alias=AliasChoices("store", "CAS_STORE", "CAS_STORE_STORE"),
        description="The store: a SQLite file, or postgresql://user:pass@host:port/db.",
    )
    objects: str | None = Field(
        default=None, description="Object bytes in s3://bucket/prefix (PostgreSQL stores).",
    )
    synchronous: str = Field(default="FULL", description="SQLite durability: FULL, NORMAL, EXTRA.")
    host: str = Field(default="127.0.0.1", description="Address to bind; loopback by default.")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port (0: any free port).")
    token: SecretStr | None = Field(
        default=None, description="Bearer token required on every /api route when set.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins allowed by CORS (comma-separated in the environment); none: off.",
    )
    max_body_bytes: int = Field(
        default=32 * MIB, ge=1024, description="Largest request body accepted (413 above it).",
    )
    body_timeout: float = Field(
        default=15.0, gt=0, le=3600,
        description="Seconds a request body may take to arrive in full before a 408.",
    )
    header_timeout: float = Field(
        default=10.0, gt=0, le=600,
        description="Seconds a connection may take to send a request's line and headers"
        " (counted from connecting, or from the previous response); then it is closed.",
    )
    keep_alive_timeout: float = Field(
        default=5.0, gt=0, le=600,
        description="Seconds an idle keep-alive connection is kept open.",
    )
    max_connections: int | None = Field(
        default=None, ge=1,
        description="Most connections held at once (default: from the open-file limit)."
        " Past it, the oldest connection still sending its headers is closed.",
    )
    max_messages: int = Field(
        default=100_000, ge=1,
        description="Most messages one request may carry (413 above it).",
    )
    load_cache_mb: int = Field(
        default=32, ge=0,
        description="MiB of decoded messages kept for repeat full loads (0: none).",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names accepted in the Host header besides the loopback names and"
        " the bound host (comma-separated in the environment; * accepts any).",
    )
    recover_on_start: bool = Field(
        default=True, description="Run recovery once before accepting requests.",
    )
    log_level: str = Field(default="info", description="uvicorn log level.")

    @field_validator("store", mode="before")
    @classmethod
    def _store_text(cls, value: Any) -> Any:
        """Take a path object as its text (a file path and a URL are both strings)."""
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [o.strip() for o in value.split(",") if o.strip()]
        return value

    @field_validator("token", mode="after")
    @classmethod
    def _no_empty_token(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty token would make "Bearer " a valid credential: treat it as an error.
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("the token must not be empty")
        return value

    @field_validator("synchronous", mode="after")
    @classmethod
    def _sync_mode(cls, value: str) -> str:
        mode = value.upper()
        if mode not in ("NORMAL", "FULL", "EXTRA"):
            raise ValueError("synchronous must be one of FULL, NORMAL, EXTRA")
        return mode

    @model_validator(mode="after")
    def _refuse_public_without_token(self) -> Settings:
        if self.token is None and not is_loopback(self.host):
            raise InsecureSettings(
                f"refusing to listen on {self.host} without a token: anyone who can reach"
                " it could read and change every session. Set --token (or"
                " CAS_STORE_TOKEN), or bind to 127.0.0.1."
            )
        return self
