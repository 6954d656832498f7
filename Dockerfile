# bnproxy: docker build -t bnproxy . && docker run -p 8080:8080 bnproxy
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY bnproxy ./bnproxy
COPY twisted ./twisted
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
# Build Twisted's plugin caches now: at run time site-packages is not writable.
RUN python -c "from twisted.plugin import IPlugin, getPlugins; import twisted.plugins, bnproxy.plugins; from bnproxy.chain.interfaces import IMiddlewareFactory; list(getPlugins(IPlugin, twisted.plugins)); list(getPlugins(IMiddlewareFactory, bnproxy.plugins))" \
    && useradd --system --uid 10001 --create-home --home-dir /var/lib/bnproxy bnproxy
USER 10001
WORKDIR /var/lib/bnproxy
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/live', timeout=2).status != 200)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["twistd", "--nodaemon", "--pidfile=", "bnproxy"]
CMD ["--port", "tcp:8080", "--state-dir", "/var/lib/bnproxy"]
