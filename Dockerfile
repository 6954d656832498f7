# bnproxy: docker build -t bnproxy . && docker run -p 8080:8080 bnproxy
# Configure with BNPROXY_* (docker run -e BNPROXY_PORT=9000 …) or a mounted
# TOML file (BNPROXY_CONFIG); the health check follows BNPROXY_PORT.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY bnproxy ./bnproxy
COPY twisted ./twisted
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
COPY deploy/healthcheck.py /usr/local/bin/bnproxy-healthcheck
# Build Twisted's plugin caches now: at run time site-packages is not writable.
RUN python -c "from twisted.plugin import IPlugin, getPlugins; import twisted.plugins, bnproxy.plugins; from bnproxy.chain.interfaces import IMiddlewareFactory; list(getPlugins(IPlugin, twisted.plugins)); list(getPlugins(IMiddlewareFactory, bnproxy.plugins))" \
    && useradd --system --uid 10001 --create-home --home-dir /var/lib/bnproxy bnproxy
USER 10001
WORKDIR /var/lib/bnproxy
# Defaults through the environment, so that docker run -e / compose override
# them (a command-line option would outrank BNPROXY_*).
ENV BNPROXY_PORT=8080 \
    BNPROXY_STATE_DIR=/var/lib/bnproxy \
    PYTHONUNBUFFERED=1
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "/usr/local/bin/bnproxy-healthcheck", "/live"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["twistd", "--nodaemon", "--pidfile=", "bnproxy"]
# Options given here (docker run IMAGE --port 9000) outrank BNPROXY_*.
CMD []
