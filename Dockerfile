# lbctl in a container: a slim image, a non-root user, and a HEALTHCHECK through lbctl check.
#
#   docker build -t lbctl .
#   docker run --rm -p 8080:8080 -v "$PWD/lb.toml:/etc/lbctl/lb.toml:ro" lbctl
#   docker kill -s HUP <container>        # reload /etc/lbctl/lb.toml (an invalid file changes nothing)
#
# The config must listen on 0.0.0.0 (or [::]) to be reachable from outside the container;
# an [admin] address other than loopback needs a token (-e LBCTL_ADMIN_TOKEN=...).

# ---- build: install lbctl and its dependencies into a virtualenv ------------------------
FROM python:3.12-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY lbctl ./lbctl
RUN python -m venv /opt/lbctl && /opt/lbctl/bin/pip install /src

# ---- run: the virtualenv only, as an unprivileged user --------------------------------
FROM python:3.12-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin lbctl \
    && mkdir -p /etc/lbctl
COPY --from=build /opt/lbctl /opt/lbctl
ENV PATH=/opt/lbctl/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER lbctl
EXPOSE 8080 9900
STOPSIGNAL SIGTERM
# Healthy while the config loads and at least one backend of every pool answers its probe:
# lbctl check exits 0 (OK) or 1 (WARNING: some backend down); 2 (CRITICAL: a pool with none
# up) and 3 (UNKNOWN: a bad config) make the container unhealthy.
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
    CMD ["sh", "-c", "lbctl check /etc/lbctl/lb.toml -q --timeout 5s; [ $? -le 1 ]"]
ENTRYPOINT ["lbctl"]
CMD ["serve", "/etc/lbctl/lb.toml"]
