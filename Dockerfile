# aivonx: the same two start commands as `make serve` (init, then gunicorn), in production mode.
# Build: docker build -t aivonx .
# Run:   docker run -p 11434:11434 -e AIVONX_SECRET_KEY=... -e AIVONX_ADMIN_PASSWORD=... \
#          -e AIVONX_NODES=http://gpu1:11434 aivonx
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AIVONX_ENV=production \
    AIVONX_BIND=0.0.0.0:11434

WORKDIR /app
RUN useradd --create-home --uid 10001 aivonx

COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY config ./config
COPY migrations ./migrations
COPY aivonx ./aivonx
COPY wsgi.py gunicorn.conf.py ./
RUN mkdir -p /app/instance && chown aivonx:aivonx /app/instance

USER aivonx
EXPOSE 11434
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:11434/api/health', timeout=4)"

# exec: gunicorn replaces the shell and receives SIGTERM directly, so in-flight streams get
# the graceful timeout.
CMD ["sh", "-c", "flask --app aivonx init && exec gunicorn -c gunicorn.conf.py wsgi:app"]
