"""All worker configuration, read once from environment variables and `.env`."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from jsonpointer import JsonPointer, JsonPointerException
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from rich.markup import escape

from contracts.review import FEEDBACK_TOPIC, REVIEW_TOPIC
from worker.security import KafkaSecurity, TritonTLS

if TYPE_CHECKING:
    from rich.console import Console


class Route(BaseModel):
    """One classification path: source topic -> Triton model -> sink topic, and where in the
    producer's own message shape the text, title and id are (`worker/mapping.py`)."""

    model_config = ConfigDict(extra="forbid")

    source: str
    model: str
    sink: str
    value_format: Literal["json", "text"] = Field(
        "json", description="json: a JSON object; text: the whole value is the text (UTF-8)."
    )
    text_field: str = Field("/text", description="RFC 6901 JSON pointer to the text.")
    title_field: str | None = Field("/title", description="Pointer to an optional title.")
    id_field: str = Field("/id", description="Pointer to the message id (with id_from=field).")
    id_from: Literal["field", "key", "coordinates"] = Field(
        "field",
        description="field: id_field, else the Kafka key; key: the Kafka key; coordinates: "
        "topic-partition-offset, for topics without ids.",
    )
    review_below: float | None = Field(
        None,
        ge=0,
        le=1,
        description="A labelled record with a lower confidence is also copied to the review "
        "topic (REVIEW_TOPIC) for a person to check; None = nothing goes to review.",
    )
    review_below_by_label: dict[str, float] = Field(
        default_factory=dict,
        description="Per predicted label, a review_below of its own (overrides review_below).",
    )
    keep_input: Literal["none", "all"] | list[str] | None = Field(
        None,
        description="What of the input the output's meta carries: None = the input's /meta "
        "object; none; all (the whole input); or a list of pointers, each kept under its "
        "pointer.",
    )

    @field_validator("text_field", "title_field", "id_field")
    @classmethod
    def _pointer(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                JsonPointer(value)
            except JsonPointerException as exc:
                raise ValueError(f"{value!r} is not a JSON pointer (RFC 6901): {exc}") from None
        return value

    @field_validator("keep_input")
    @classmethod
    def _pointers(cls, value: object) -> object:
        if isinstance(value, list):
            for pointer in value:
                cls._pointer(pointer)
        return value

    @property
    def reviews(self) -> bool:
        """Whether any record of this route can go to review."""
        return self.review_below is not None or bool(self.review_below_by_label)

    def review_threshold(self, label: str) -> float | None:
        """Below this confidence a record of `label` goes to review too (None: never)."""
        return self.review_below_by_label.get(label, self.review_below)

    @model_validator(mode="after")
    def _text_values_have_no_id_field(self) -> Route:
        if self.value_format == "text" and self.id_from == "field":
            raise ValueError("value_format=text has no id field: set id_from to key or coordinates")
        return self


DEFAULT_ROUTES = [
    Route(source="news.raw", model="news_topic", sink="news.labelled"),
    Route(source="reviews.raw", model="review_sentiment", sink="reviews.labelled"),
]


class DriftSettings(BaseModel):
    """Drift monitoring, one `DRIFT_<FIELD>` environment variable per field (`WorkerSettings`
    splits `DRIFT_WINDOW_S` into `drift.window_s`). Other `DRIFT_*` variables are ignored, as
    any unknown variable is."""

    model_config = ConfigDict(extra="ignore")

    enabled: bool = Field(True, description="Publish drift reports per model and window.")
    topic: str = Field("labelstream.drift", description="Where drift reports go (key = model).")
    window_s: float = Field(60.0, gt=0, description="A window closes after this many seconds…")
    window_messages: int = Field(1000, ge=1, description="…or after this many messages.")
    tick_s: float = Field(
        5.0, gt=0, description="How often idle windows are checked for their time limit."
    )
    embedding_sample: int = Field(
        256, ge=2, description="Projected embeddings kept per window (reservoir sample) for MMD."
    )
    permutations: int = Field(
        1000, ge=10, description="Permutations of the MMD test (its smallest p is 1/(n+1))."
    )
    confidence_threshold: float = Field(
        0.5, gt=0, lt=1, description="Reports the share of messages labelled below this."
    )
    alpha: float = Field(
        0.001, gt=0, lt=1, description="A shift counts only when its test's p-value is below this."
    )
    psi_warn: float = Field(0.1, ge=0, description="Label/length PSI that warns.")
    psi_drift: float = Field(0.25, ge=0, description="Label/length PSI that means drift.")
    ks_warn: float = Field(0.1, ge=0, description="Confidence KS distance that warns.")
    ks_drift: float = Field(0.2, ge=0, description="Confidence KS distance that means drift.")
    mmd_warn: float = Field(0.02, ge=0, description="Embedding MMD² that warns.")
    mmd_drift: float = Field(0.05, ge=0, description="Embedding MMD² that means drift.")
    deadletter_warn: float = Field(0.05, ge=0, description="Dead-letter rate that warns.")
    deadletter_drift: float = Field(0.25, ge=0, description="Dead-letter rate that means drift.")

    @model_validator(mode="after")
    def _permutations_can_reach_alpha(self) -> DriftSettings:
        smallest_p = 1.0 / (self.permutations + 1)
        if smallest_p >= self.alpha:
            raise ValueError(
                f"DRIFT_PERMUTATIONS={self.permutations} cannot give a p-value below "
                f"DRIFT_ALPHA={self.alpha}: use at least {int(1 / self.alpha)}"
            )
        return self


class WorkerSettings(BaseSettings, KafkaSecurity, TritonTLS):
    """Settings of the worker; the embedded local stack (`devstack/`) reads them too, and its
    own launcher-only settings from `devstack/settings.py`.

    Kafka TLS/SASL and Triton TLS fields come from `worker/security.py` (`KAFKA_SECURITY_*`,
    `KAFKA_SASL_*`, `KAFKA_SSL_*`, `TRITON_SSL`, ...).
    """

    # DRIFT_WINDOW_S -> drift.window_s: nested models read `<FIELD>_<INNER FIELD>`, split once.
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        env_nested_delimiter="_",
        env_nested_max_split=1,
    )

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
    review_topic: str = Field(
        REVIEW_TOPIC,
        description="Copies of labelled records under their route's review_below (key = id), "
        "for `worker review`.",
    )
    feedback_topic: str = Field(
        FEEDBACK_TOPIC,
        description="People's labels for message ids ({id, label, by, ts[, text]}), joined "
        "to the worker's predictions for live accuracy; `trainer retrain` reads it.",
    )
    feedback_retention_s: float = Field(
        7 * 24 * 3600.0,
        gt=0,
        description="How long the worker remembers a prediction sent to review, for joining "
        "feedback to it; later feedback is a dead letter (expired).",
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

    # Delivery
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once",
        description="exactly_once: each batch's outputs (labelled records, dead letters, drift "
        "samples) and its input offsets commit in one Kafka transaction, with a transactional "
        "producer per input partition; consumers of the outputs must read with "
        "isolation.level=read_committed (README, Exactly-once).",
    )
    transaction_timeout_s: float = Field(
        60.0,
        gt=0,
        le=900,
        description="transaction.timeout.ms of the exactly-once producers: the broker aborts a "
        "dead worker's open transaction after this (at most the broker's "
        "transaction.max.timeout.ms, 900 s by default). Triton time is never inside one.",
    )
    transaction_step_timeout_s: float = Field(
        15.0,
        gt=0,
        description="Longest wait for one transaction step (begin, send, offsets, commit) before "
        "the producer is replaced and the committed offset decides what happened.",
    )

    # Batching
    max_batch: int = Field(
        256,
        ge=1,
        description="Most messages the worker takes and publishes as one batch: one produce "
        "request per partition, one ack and one drift sample for all of them.",
    )
    triton_batch: int = Field(
        64,
        ge=1,
        description="Most texts in one Triton request (at most the model's max_batch_size); a "
        "batch larger than this goes to Triton as several requests at once.",
    )
    numpy_threads: int = Field(
        1,
        ge=1,
        description="BLAS threads for the worker's numpy work (drift statistics, embedding "
        "projections): the worker is one asyncio thread, and idle BLAS threads spin.",
    )
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
    max_message_bytes: int = Field(
        64 * 1024, ge=1, description="Raw message size limit: larger messages are dead letters."
    )
    max_text_chars: int = Field(
        20_000,
        ge=1,
        description="A longer text is labelled from its first MAX_TEXT_CHARS characters, "
        "flagged truncated.",
    )
    drop_headers: list[str] = Field(
        default_factory=list,
        description="JSON list of input header names (any case) not copied to the outputs.",
    )
    output_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "zstd",
        description="Codec of everything the worker produces. zstd: a fifth of the bytes for "
        "about 1 µs of CPU per message (bench/compression.json).",
    )
    producer_max_request_bytes: int = Field(
        1_000_000,
        ge=16 * 1024,
        description="Largest record the worker produces; checked at start against the "
        "broker's and the output topics' message.max.bytes. Bigger dead letters are cut to fit.",
    )
    inject_failure_text: str = Field(
        "",
        description="Test seam: a message whose text contains this string fails inside the "
        "pipeline and becomes a processing_error dead letter. Empty = off.",
    )

    # Triton
    triton_url: str = Field("127.0.0.1:8001", description="Triton gRPC endpoint host:port.")
    triton_timeout_s: float = Field(30.0, gt=0, description="Per-request client timeout.")
    triton_retry_initial_s: float = Field(
        0.2, gt=0, description="First backoff when Triton is unavailable."
    )
    triton_retry_max_s: float = Field(
        5.0, gt=0, description="Backoff cap; retries go on until Triton answers."
    )

    drift: DriftSettings = Field(
        default_factory=DriftSettings,
        description="Drift monitoring: the DRIFT_* variables (DRIFT_WINDOW_S, ...).",
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

    # Local state (the worker's, and the local stack's in devstack/)
    state_dir: Path = Field(
        Path(".labelstream"),
        description="Local state: the worker's Faust table data, and the local stack's ports, "
        "pids, logs, Kafka data.",
    )
    model_repository: Path = Field(
        Path("triton_models"),
        description="Triton model repository: served by the local stack; the worker reads each "
        "version's reference.json from it for drift.",
    )

    @field_validator("drop_headers")
    @classmethod
    def _header_names_any_case(cls, value: list[str]) -> list[str]:
        return [name.lower() for name in value]

    @model_validator(mode="after")
    def _transaction_outlives_its_steps(self) -> WorkerSettings:
        if self.transaction_timeout_s < 3 * self.transaction_step_timeout_s:
            raise ValueError(
                "TRANSACTION_TIMEOUT_S must be at least 3 x TRANSACTION_STEP_TIMEOUT_S: a "
                "transaction of a live worker must never time out between its steps"
            )
        return self

    @property
    def producer_compression(self) -> str | None:
        """OUTPUT_COMPRESSION as aiokafka's `compression_type` (None for none)."""
        return None if self.output_compression == "none" else self.output_compression

    @property
    def producer_batch_bytes(self) -> int:
        """One produce batch per partition and worker batch (worker/publishing.py): room for a
        whole batch of labelled records, never above the request limit."""
        return min(self.producer_max_request_bytes, 256 * 1024)

    @property
    def exactly_once(self) -> bool:
        return self.processing_guarantee == "exactly_once"

    @property
    def drift_samples_topic(self) -> str:
        """Internal topic from classify agents to the drift agent (key = model name)."""
        return f"{self.app_id}-drift-samples"


@lru_cache
def get_settings() -> WorkerSettings:
    return WorkerSettings()


NESTED_SETTINGS = ("drift",)
"""Fields whose inner fields are variables of their own (`DRIFT_WINDOW_S`), not one JSON value."""


def describe_settings_error(exc: ValidationError, env_prefix: str = "") -> str:
    """A settings ValidationError in the words a user configures: one line per environment
    variable, with the value only where it cannot be a secret."""
    lines = []
    for error in exc.errors():
        field, *inner = [str(part) for part in error["loc"]] or [""]
        if field in NESTED_SETTINGS and inner:
            field, inner = f"{field}_{inner[0]}", inner[1:]
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
