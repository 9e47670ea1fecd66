# The Datapoort gateway. Installs exactly what uv.lock pins, without the dev tools, and runs unprivileged.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_COMPILE_BYTECODE=1

WORKDIR /app
RUN pip install --no-cache-dir uv==0.13.9
COPY pyproject.toml uv.lock README.md ./
COPY gateway gateway
COPY policies policies
COPY anonymization anonymization
COPY audit audit
RUN uv sync --frozen --no-dev --no-cache

RUN useradd --system --uid 10001 --home-dir /data datapoort && mkdir -p /data && chown datapoort /data
USER datapoort
ENV PATH=/opt/venv/bin:$PATH \
    DATAPOORT_DATA_DIR=/data \
    DATAPOORT_HOST=0.0.0.0 \
    DATAPOORT_PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["datapoort", "serve"]
