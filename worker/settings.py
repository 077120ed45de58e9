"""All worker configuration, read once from environment variables and `.env`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Route(BaseModel):
    """One classification path: source topic -> Triton model -> sink topic."""

    source: str
    model: str
    sink: str


DEFAULT_ROUTES = [
    Route(source="news.raw", model="news_topic", sink="news.labelled"),
    Route(source="reviews.raw", model="review_sentiment", sink="reviews.labelled"),
]


class WorkerSettings(BaseSettings):
    """Settings of the worker and of the embedded local stack (`worker stack ...`)."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Kafka
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Comma-separated Kafka brokers."
    )
    app_id: str = Field("labelstream", description="Faust app id = Kafka consumer group.")
    routes: list[Route] = Field(
        default_factory=lambda: list(DEFAULT_ROUTES),
        description="JSON list of {source, model, sink}.",
    )
    deadletter_topic: str = Field(
        "labelstream.deadletter",
        description="Where invalid or unclassifiable input goes, with the reason.",
    )
    topic_partitions: int = Field(
        4, ge=1, description="Partitions of topics created by `worker topics` / the local stack."
    )
    topic_replication_factor: int = Field(
        1, ge=1, description="Replication factor of created topics."
    )
    kafka_session_timeout_s: float = Field(10.0, gt=0, description="Failover time after a crash.")
    kafka_heartbeat_interval_s: float = Field(1.0, gt=0, description="Consumer heartbeat interval.")
    kafka_commit_interval_s: float = Field(
        1.0, gt=0, description="How often acknowledged offsets are committed."
    )

    # Batching
    max_batch: int = Field(64, ge=1, description="Largest micro-batch sent to Triton in one call.")
    max_wait_ms: int = Field(20, ge=0, description="Longest wait to fill a micro-batch.")

    # Validation
    max_message_bytes: int = Field(64 * 1024, ge=1, description="Raw message size limit.")
    max_text_chars: int = Field(20_000, ge=1, description="Text length limit after parsing.")

    # Triton
    triton_url: str = Field("127.0.0.1:8001", description="Triton gRPC endpoint host:port.")
    triton_timeout_s: float = Field(30.0, gt=0, description="Per-request client timeout.")
    triton_retry_initial_s: float = Field(
        0.2, gt=0, description="First backoff when Triton is unavailable."
    )
    triton_retry_max_s: float = Field(
        5.0, gt=0, description="Backoff cap; retries go on until Triton answers."
    )

    # Logging
    log_level: str = Field("INFO", description="Log level.")
    log_format: str = Field(
        "auto",
        pattern="^(auto|json|console)$",
        description="auto = JSON unless stderr is a terminal.",
    )

    # Local stack
    state_dir: Path = Field(
        Path(".labelstream"), description="Local stack state: ports, pids, logs, Kafka data."
    )
    model_repository: Path = Field(
        Path("triton_models"), description="Triton model repository served by the local stack."
    )
    kafka_version: str = Field(
        "4.1.1", description="Apache Kafka version the local stack resolves with mvn."
    )
    kafka_heap: str = Field("512m", description="Java heap of the local broker.")
    kafka_libs_cache: Path = Field(
        Path.home() / ".cache" / "labelstream" / "kafka",
        description="Where the broker jars are cached, outside the clone.",
    )

    @property
    def max_wait_s(self) -> float:
        return self.max_wait_ms / 1000.0


@lru_cache
def get_settings() -> WorkerSettings:
    return WorkerSettings()
