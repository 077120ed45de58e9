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
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    app_id: str = "labelstream"
    routes: list[Route] = Field(default_factory=lambda: list(DEFAULT_ROUTES))
    deadletter_topic: str = "labelstream.deadletter"
    topic_partitions: int = Field(4, ge=1)
    topic_replication_factor: int = Field(1, ge=1)
    kafka_session_timeout_s: float = Field(10.0, gt=0, description="Failover time after a crash.")
    kafka_heartbeat_interval_s: float = Field(1.0, gt=0)
    kafka_commit_interval_s: float = Field(1.0, gt=0)

    # Batching
    max_batch: int = Field(64, ge=1, description="Largest micro-batch sent to Triton in one call.")
    max_wait_ms: int = Field(20, ge=0, description="Longest wait to fill a micro-batch.")

    # Validation
    max_message_bytes: int = Field(64 * 1024, ge=1, description="Raw message size limit.")
    max_text_chars: int = Field(20_000, ge=1, description="Text length limit after parsing.")

    # Triton
    triton_url: str = "127.0.0.1:8001"
    triton_timeout_s: float = Field(30.0, gt=0, description="Per-request client timeout.")
    triton_retry_initial_s: float = Field(0.2, gt=0)
    triton_retry_max_s: float = Field(5.0, gt=0)

    # Logging
    log_level: str = "INFO"
    log_format: str = Field("auto", pattern="^(auto|json|console)$")

    # Local stack
    state_dir: Path = Path(".labelstream")
    model_repository: Path = Path("triton_models")
    kafka_version: str = "4.1.1"
    kafka_heap: str = "512m"
    kafka_libs_cache: Path = Path.home() / ".cache" / "labelstream" / "kafka"

    @property
    def max_wait_s(self) -> float:
        return self.max_wait_ms / 1000.0


@lru_cache
def get_settings() -> WorkerSettings:
    return WorkerSettings()
