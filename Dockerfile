# The testproject (the demo Django project) served by django-wsgiserve.
#
#   docker build -t wsgiserve-testproject .
#   docker run --rm -p 8000:8000 -p 9100:9100 wsgiserve-testproject
#
# Kubernetes manifests for this image: deploy/kubernetes/. Why each line is here:
# docs/operations.md ("Containers and Kubernetes"). tests/unit/test_deploy_files.py and
# tests/integration/test_deploy.py read this file: the CMD, the ENV values, USER and the
# collectstatic step are checked against the manifests and run against the real server.
FROM python:3.11-slim

# No .pyc files written at run time (the code is compiled below, and the root filesystem may
# be read-only); output unbuffered, so that log lines reach `docker logs` / kubectl at once.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A numeric user: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app

WORKDIR /app
# The package first: this layer is rebuilt only when the package changes, not the project.
COPY pyproject.toml README.md ./
COPY django_wsgiserve ./django_wsgiserve
RUN pip install . && rm -rf build django_wsgiserve.egg-info

COPY testproject ./testproject
WORKDIR /app/testproject

# testproject/testproject/settings.py reads TESTPROJECT_*; WSGISERVE_* are the server's
# options (docs/settings.md). The sqlite database and uploads live under /data, a volume in
# Kubernetes; static files are collected into the image once, here.
ENV DJANGO_SETTINGS_MODULE=testproject.settings \
    TESTPROJECT_STATIC_ROOT=/app/staticfiles \
    TESTPROJECT_DB=/data/db.sqlite3 \
    TESTPROJECT_MEDIA_ROOT=/data/media \
    WSGISERVE_METRICS_BIND=0.0.0.0:9100 \
    WSGISERVE_ACCESS_LOG_FORMAT=json

RUN python manage.py collectstatic --noinput --verbosity 0 \
    && python -m compileall -q /app/testproject \
    && install -d -o 10001 -g 10001 /data

USER 10001:10001
# 8000: the application (BIND below); 9100: /healthz, /readyz and /metrics (METRICS_BIND).
EXPOSE 8000 9100
# Exec form: the server's master is PID 1 and receives the SIGTERM itself (a shell would not
# pass it on). As PID 1 it also reaps any orphan (its reaper waits for every child).
CMD ["python", "manage.py", "serve", "0.0.0.0:8000"]
