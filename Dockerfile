# The embedq worker image (also used for Flower). The bundled model is inside the package:
# nothing is downloaded when a container starts.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY config ./config
COPY producer ./producer
COPY worker ./worker
COPY embedq ./embedq
RUN pip install '.[worker,monitor]' \
    && useradd --create-home --uid 10001 embedq

USER embedq
# Same command as the README's: `embedq worker` = `celery -A embedq.worker worker` with embedq's queues.
CMD ["embedq", "worker"]
