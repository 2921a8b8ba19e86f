# One image for the API, the migration job and the workers (docker-compose.yml picks the command).
# GPU workers need a CUDA build of torch: build with
#   --build-arg TORCH_INDEX_URL=<PyTorch's CUDA wheel index for your CUDA version>
FROM python:3.11-slim

ARG TORCH_INDEX_URL=""
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md* ./
COPY api ./api
COPY core ./core
COPY storage ./storage
COPY worker ./worker
COPY webhooks ./webhooks
COPY queueing ./queueing
COPY netguard ./netguard
COPY cli ./cli
COPY migrations ./migrations
COPY alembic.ini ./

RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install --index-url "$TORCH_INDEX_URL" torch; fi \
    && pip install .

RUN useradd --create-home --uid 10001 app
USER app
ENV WEIGHTS_DIR=/weights
EXPOSE 8000
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]
