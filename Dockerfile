# fastingress image: the supervisor as PID 1, workers as its child processes.
#   docker build -t fastingress:0.1.0 .
# Two stages: the builder installs the project and its dependencies (binary wheels, no compiler) into a
# virtual environment; the final stage copies only that environment onto the same base image, so the
# interpreter the venv points at (/usr/local/bin/python3.11) is the same one.

FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/fastingress

WORKDIR /src
COPY pyproject.toml README.md ./
COPY fastingress ./fastingress
COPY workers ./workers

# A wheel of the project, installed with its runtime dependencies (never the test extra). The root
# filesystem is read-only at run time, so no .pyc can be written then: everything is compiled here,
# checked by hash rather than by mtime, so that copying into the next stage cannot invalidate them.
RUN /opt/fastingress/bin/pip install --no-cache-dir . \
    && /opt/fastingress/bin/python -m compileall -q -f --invalidation-mode unchecked-hash /opt/fastingress/lib

FROM python:3.11-slim

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="fastingress" \
      org.opencontainers.image.description="A fast Kubernetes Ingress controller in Python" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed, unprivileged UID/GID (deploy/ runs the pod as 10001:10001 with runAsNonRoot); no home, no shell.
RUN groupadd --system --gid 10001 fastingress \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin fastingress

COPY --from=builder /opt/fastingress /opt/fastingress

# PATH: `fastingress` and the interpreter the workers are started with (sys.executable) are the venv's.
# No bytecode writes: the root filesystem is read-only in deploy/ (everything was compiled above).
ENV PATH=/opt/fastingress/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1

USER 10001:10001
WORKDIR /

# http, https, admin (/healthz /readyz /metrics): the Settings defaults
EXPOSE 8080 8443 10254

# SIGTERM is the graceful drain (SIGQUIT would be the fast stop).
STOPSIGNAL SIGTERM

# The supervisor is PID 1: it installs handlers for the signals it acts on (a PID 1 gets no default
# actions), reaps its workers on SIGCHLD, and exits 0 after a drain. No HEALTHCHECK: Kubernetes ignores
# it and probes the admin port (/healthz, /readyz) itself.
ENTRYPOINT ["fastingress", "serve"]
