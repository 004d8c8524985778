"""All settings of the service in one place, read from ``HPT_*`` environment variables."""

from __future__ import annotations

import os
import re

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The device names of HPT_DEVICE (studies.devices.DEVICE_PATTERN, without importing torch).
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?)$")


class Settings(BaseSettings):
    """Configuration of the API, the workers and the dashboard.

    Every field is read from the environment variable ``HPT_<FIELD>`` (``HPT_DATABASE_URL``,
    ``HPT_API_KEY`` ...). Command-line flags of ``hpt`` override them.
    """

    model_config = SettingsConfigDict(env_prefix="HPT_", extra="ignore")

    database_url: str = Field(
        "sqlite:///hpt.db",
        description="SQLAlchemy URL of the database that holds the service's tables and Optuna's "
        "(sqlite:///path.db or postgresql+psycopg://user:password@host:5432/db).",
    )
    api_key: SecretStr | None = Field(
        None, description="When set, every mutating request needs 'Authorization: Bearer <key>'."
    )
    host: str = Field("127.0.0.1", description="Address the API listens on.")
    port: int = Field(8000, ge=0, le=65535, description="Port the API listens on.")
    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=0,
        description="Embedded worker processes of 'hpt serve' (0: API only); default one per core.",
    )
    device: str = Field(
        "auto",
        description="Where workers train: auto (CUDA if present, else the CPU), cpu, cuda or "
        "cuda:N. With auto or cuda on a GPU machine, 'hpt serve' runs one worker per GPU.",
    )
    dashboard_host: str = Field("127.0.0.1", description="Address optuna-dashboard listens on.")
    dashboard_port: int = Field(8080, ge=0, le=65535, description="Port of optuna-dashboard.")

    max_trials: int = Field(
        1000, ge=1, le=1_000_000, description="Largest n_trials (per optimizer) a study may ask."
    )
    max_epochs: int = Field(
        1000, ge=1, le=1_000_000, description="Largest number of epochs a study may ask."
    )
    trial_time_limit: float = Field(
        600.0, gt=0, description="Seconds a trial may train before it is stopped and pruned."
    )
    max_failed_trials: int = Field(
        10,
        ge=1,
        description="Failed trials (exceptions, dead workers) per optimizer before a study is "
        "marked failed; a failed trial's slot is otherwise given back and tried again.",
    )

    heartbeat_interval: int = Field(
        5, ge=1, description="Seconds between a running trial's heartbeats (Optuna heartbeat)."
    )
    grace_period: int = Field(
        20,
        ge=2,
        description="Seconds without a heartbeat after which a trial is failed and its slot "
        "given back (a worker that died).",
    )
    lease_seconds: float = Field(
        300.0, gt=0, description="Default lease of an ask/tell trial before it is failed."
    )
    poll_interval: float = Field(
        1.0, gt=0, description="Seconds an idle worker waits before looking for work again."
    )
    log_level: str = Field("info", description="Log level of the API and the workers.")
    max_request_bytes: int = Field(
        1_048_576, ge=1024, description="Largest request body the API accepts (413 above it)."
    )

    @field_validator("database_url")
    @classmethod
    def _known_backend(cls, url: str) -> str:
        if not url.startswith(("sqlite:///", "postgresql")):
            raise ValueError(
                "HPT_DATABASE_URL must be sqlite:///<file> or postgresql+psycopg://... "
                f"(got {url.split('://')[0]}://...)"
            )
        if url in ("sqlite://", "sqlite:///:memory:"):
            raise ValueError("an in-memory SQLite database cannot be shared by API and workers")
        return url

    @field_validator("api_key")
    @classmethod
    def _key_not_empty(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and not key.get_secret_value().strip():
            raise ValueError(
                "HPT_API_KEY is set but empty, which would leave the API open to anyone: "
                "give it a key (make .env writes a random one), or unset it to run without one"
            )
        return key

    @field_validator("device")
    @classmethod
    def _device_name(cls, name: str) -> str:
        # Only the spelling here (no torch import); whether this machine has that GPU is
        # checked where the worker starts (studies.devices.resolve_device).
        normalized = name.strip().lower()
        if not DEVICE_PATTERN.match(normalized):
            raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
        return normalized

    @property
    def api_key_value(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key else None
