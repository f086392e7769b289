# aivonx: the same two start commands as `make serve` (init, then gunicorn), in production mode.
# Build: docker build -t aivonx .
# Run:   docker run -p 11434:11434 -e AIVONX_SECRET_KEY=... -e AIVONX_ADMIN_PASSWORD=... \
#          -e AIVONX_NODES=http://gpu1:11434 aivonx
# Stop:  docker stop --time 310 ... (longer than AIVONX_GRACEFUL_TIMEOUT, so streams can finish)
#
# The Python CI tests on (3.11.7), pinned by digest as well: a rebuilt tag cannot change the image.
FROM python:3.11.7-slim-bookworm@sha256:d11b9bd5e49ea7401753d78f4d3b56f3aec952b85b49bcae88981f0452818e0b

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AIVONX_ENV=production \
    AIVONX_BIND=0.0.0.0:11434

WORKDIR /app
RUN groupadd --gid 10001 aivonx \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin aivonx

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

COPY config ./config
COPY migrations ./migrations
COPY aivonx ./aivonx
COPY wsgi.py gunicorn.conf.py ./
RUN mkdir -p /app/instance && chown 10001:10001 /app/instance

# Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 10001:10001
EXPOSE 11434
# Liveness only (the process answers); readiness (/api/ready) is the orchestrator's business.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:11434/api/health', timeout=4)"]

# exec: gunicorn replaces the shell as PID 1 and receives SIGTERM itself, so in-flight
# streams get AIVONX_GRACEFUL_TIMEOUT. Kubernetes and compose override the command to run
# the two steps apart (a migration Job or service, then gunicorn alone in every replica).
CMD ["sh", "-c", "flask --app aivonx init && exec gunicorn -c gunicorn.conf.py wsgi:app"]
