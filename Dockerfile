# syntax=docker/dockerfile:1
# The service image: python -m service <command>, non-root, no compilers, no embedded servers.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the pinned runtime dependencies of pyproject.toml, then the service's own wheel ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml ./
# pyproject.toml is the one list of pins: its [project] dependencies, nothing optional.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --only-binary=:all: -r requirements.txt
# The wheel carries service/ with sql/ and config/ (as coupons_sql, coupons_config).
COPY service ./service
COPY sql ./sql
COPY config ./config
RUN /opt/venv/bin/pip install --no-deps .

# --- runtime: the virtualenv alone --------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    APP_ENV=production
USER app
EXPOSE 8080
# SIGTERM: /readyz 503, listener closed, requests in flight finished, exit 0 (README).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=3s --start-period=15s --retries=3 \
  CMD ["python", "-c", "__import__('urllib.request').request.urlopen('http://127.0.0.1:8080/readyz',timeout=2)"]
ENTRYPOINT ["python", "-m", "service"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080", "--workers", "2"]
