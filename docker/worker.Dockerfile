# The worker image: no torch, no trainer dependencies. Build stage makes wheels, the runtime
# stage installs only those and runs as an unprivileged numeric user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY worker ./worker
COPY trainer ./trainer
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN groupadd --gid 10001 labelstream \
    && useradd --create-home --uid 10001 --gid 10001 labelstream
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && python -c "from worker.codecs import check_codecs; check_codecs()"
USER 10001:10001
WORKDIR /home/labelstream
ENV STATE_DIR=/home/labelstream/state \
    MODEL_REPOSITORY=/models \
    METRICS_PORT=9100
EXPOSE 9100
ENTRYPOINT []
CMD ["worker", "run"]
