"""Settings only the launcher reads; the worker's own settings (addresses, state dir, model
repository, topics, Kafka security) still come from `WorkerSettings`."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StackSettings(BaseSettings):
    """How the embedded broker is fetched and run: none of this goes into the worker image."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    kafka_version: str = Field(
        "4.1.1", description="Apache Kafka version the local stack resolves with mvn."
    )
    kafka_heap: str = Field("512m", description="Java heap of the local broker.")
    kafka_libs_cache: Path = Field(
        Path.home() / ".cache" / "labelstream" / "kafka",
        description="Where the broker jars are cached, outside the clone.",
    )
