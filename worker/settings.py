"""All worker configuration, read once from environment variables and `.env`."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from rich.markup import escape

from worker.security import KafkaSecurity, TritonTLS

if TYPE_CHECKING:
    from rich.console import Console


class Route(BaseModel):
    """One classification path: source topic -> Triton model -> sink topic."""

    source: str
    model: str
    sink: str


DEFAULT_ROUTES = [
    Route(source="news.raw", model="news_topic", sink="news.labelled"),
    Route(source="reviews.raw", model="review_sentiment", sink="reviews.labelled"),
]


class WorkerSettings(BaseSettings, KafkaSecurity, TritonTLS):
    """Settings of the worker and of the embedded local stack (`worker stack ...`).

    Kafka TLS/SASL and Triton TLS fields come from `worker/security.py` (`KAFKA_SECURITY_*`,
    `KAFKA_SASL_*`, `KAFKA_SSL_*`, `TRITON_SSL`, ...).
    """

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
    registry_topic: str = Field(
        "labelstream.models",
        description="Compacted model registry: active version and candidate per model.",
    )
    rollback_max_failure_rate: float = Field(
        0.05,
        ge=0,
        le=1,
        description="A canary failing more of its requests in a window is rolled back.",
    )
    rollback_min_agreement: float = Field(
        0.5,
        ge=0,
        le=1,
        description="A shadow agreeing on fewer labels in a window is rolled back.",
    )
    topic_partitions: int = Field(
        4, ge=1, description="Partitions of topics created by `worker topics` / the local stack."
    )
    topic_replication_factor: int = Field(
        1, ge=1, description="Replication factor of created topics."
    )
    topic_retention_ms: int = Field(
        7 * 24 * 3600 * 1000,
        ge=-1,
        description="retention.ms of created source, sink, dead-letter and drift topics "
        "(-1 = keep forever).",
    )
    kafka_session_timeout_s: float = Field(10.0, gt=0, description="Failover time after a crash.")
    kafka_heartbeat_interval_s: float = Field(1.0, gt=0, description="Consumer heartbeat interval.")
    kafka_commit_interval_s: float = Field(
        1.0, gt=0, description="How often acknowledged offsets are committed."
    )

    # Batching
    max_batch: int = Field(64, ge=1, description="Largest micro-batch sent to Triton in one call.")
    max_wait_ms: int = Field(20, ge=0, description="Longest wait to fill a micro-batch.")
    batches_in_flight: int = Field(
        2,
        ge=1,
        description="Batches of one route at Triton at once (published in consumption order).",
    )
    drain_timeout_s: float = Field(
        10.0,
        ge=0,
        description="On shutdown, how long batches in flight may take to publish before the stop.",
    )

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

    # Drift monitoring
    drift_enabled: bool = Field(True, description="Publish drift reports per model and window.")
    drift_topic: str = Field(
        "labelstream.drift", description="Where drift reports go (key = model)."
    )
    drift_window_s: float = Field(
        60.0, gt=0, description="A window closes after this many seconds…"
    )
    drift_window_messages: int = Field(1000, ge=1, description="…or after this many messages.")
    drift_tick_s: float = Field(
        5.0, gt=0, description="How often idle windows are checked for their time limit."
    )
    drift_embedding_sample: int = Field(
        256, ge=2, description="Projected embeddings kept per window (reservoir sample) for MMD."
    )
    drift_permutations: int = Field(
        1000, ge=10, description="Permutations of the MMD test (its smallest p is 1/(n+1))."
    )
    drift_confidence_threshold: float = Field(
        0.5, gt=0, lt=1, description="Reports the share of messages labelled below this."
    )
    drift_alpha: float = Field(
        0.001, gt=0, lt=1, description="A shift counts only when its test's p-value is below this."
    )
    drift_psi_warn: float = Field(0.1, ge=0, description="Label/length PSI that warns.")
    drift_psi_drift: float = Field(0.25, ge=0, description="Label/length PSI that means drift.")
    drift_ks_warn: float = Field(0.1, ge=0, description="Confidence KS distance that warns.")
    drift_ks_drift: float = Field(0.2, ge=0, description="Confidence KS distance that means drift.")
    drift_mmd_warn: float = Field(0.02, ge=0, description="Embedding MMD² that warns.")
    drift_mmd_drift: float = Field(0.05, ge=0, description="Embedding MMD² that means drift.")
    drift_deadletter_warn: float = Field(0.05, ge=0, description="Dead-letter rate that warns.")
    drift_deadletter_drift: float = Field(
        0.25, ge=0, description="Dead-letter rate that means drift."
    )

    # Metrics
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Prometheus endpoint port of `worker run` (0 = off; compose uses 9100).",
    )
    metrics_lag_interval_s: float = Field(
        10.0, gt=0, description="How often the consumer-lag gauge is refreshed."
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
        Path("triton_models"),
        description="Triton model repository: served by the local stack; the worker reads each "
        "version's reference.json from it for drift.",
    )
    kafka_version: str = Field(
        "4.1.1", description="Apache Kafka version the local stack resolves with mvn."
    )
    kafka_heap: str = Field("512m", description="Java heap of the local broker.")
    kafka_libs_cache: Path = Field(
        Path.home() / ".cache" / "labelstream" / "kafka",
        description="Where the broker jars are cached, outside the clone.",
    )

    @model_validator(mode="after")
    def _permutations_can_reach_alpha(self) -> WorkerSettings:
        smallest_p = 1.0 / (self.drift_permutations + 1)
        if smallest_p >= self.drift_alpha:
            raise ValueError(
                f"DRIFT_PERMUTATIONS={self.drift_permutations} cannot give a p-value below "
                f"DRIFT_ALPHA={self.drift_alpha}: use at least {int(1 / self.drift_alpha)}"
            )
        return self

    @property
    def max_wait_s(self) -> float:
        return self.max_wait_ms / 1000.0

    @property
    def drift_samples_topic(self) -> str:
        """Internal topic from classify agents to the drift agent (key = model name)."""
        return f"{self.app_id}-drift-samples"


@lru_cache
def get_settings() -> WorkerSettings:
    return WorkerSettings()


def describe_settings_error(exc: ValidationError, env_prefix: str = "") -> str:
    """A settings ValidationError in the words a user configures: one line per environment
    variable, with the value only where it cannot be a secret."""
    lines = []
    for error in exc.errors():
        field, *inner = [str(part) for part in error["loc"]] or [""]
        name = f"{env_prefix}{field}".upper() if field else "settings"
        where = f" [{'.'.join(inner)}]" if inner else ""
        value = error.get("input")
        secret = any(word in name for word in ("PASSWORD", "SECRET", "TOKEN"))
        shown = "" if not field or secret or isinstance(value, dict) else f"={value!r}"
        lines.append(f"{name}{where}{shown}: {error['msg']}")
    return "\n".join(lines)


def run_cli(
    app: Callable[[], object], settings_class: type[BaseSettings], console: Console
) -> None:
    """Run a command line whose configuration is `settings_class`: when it does not validate,
    print one line per variable (with the class's env prefix) and exit 2, not a traceback.
    Any other ValidationError stays a real error."""
    try:
        app()
    except ValidationError as exc:
        if exc.title != settings_class.__name__:
            raise
        message = describe_settings_error(exc, settings_class.model_config.get("env_prefix", ""))
        console.print(f"[red]invalid settings:[/red]\n{escape(message)}")
        raise SystemExit(2) from exc
