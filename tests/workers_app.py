"""A small twisted.web site run with ``bnproxy.server.workers`` (for
tests/test_workers.py): ``python workers_app.py N`` prints ``PORT n`` and
serves /pid (blocks 0.2 s, so the other workers take the next connections)
and /slow (answers after 1 s without blocking; in flight during a drain)."""

from __future__ import annotations

import os
import sys
import time

from twisted.internet import defer, reactor
from twisted.web import resource, server

from bnproxy.server.workers import (
    WorkerPool,
    bind_shared_socket,
    listen_on_socket,
    watch_parent,
    worker_fd_from_env,
)

IN_FLIGHT = [0]


class Pid(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        if request.path == b"/slow":
            IN_FLIGHT[0] += 1

            def answer():
                IN_FLIGHT[0] -= 1
                request.write(b"done %d" % os.getpid())
                request.finish()

            reactor.callLater(1.0, answer)
            return server.NOT_DONE_YET
        time.sleep(0.2)
        return b"%d" % os.getpid()


def drained() -> defer.Deferred:
    d = defer.Deferred()
    deadline = time.monotonic() + 10

    def check():
        if IN_FLIGHT[0] == 0 or time.monotonic() > deadline:
            d.callback(None)
        else:
            reactor.callLater(0.05, check)

    check()
    return d


def main() -> None:
    site = server.Site(Pid())
    fd = worker_fd_from_env()
    if fd is not None:  # a worker
        port = listen_on_socket(reactor, fd, site)
        watch_parent(reactor, reactor.stop)
    else:
        sock = bind_shared_socket(0, "127.0.0.1")
        port = listen_on_socket(reactor, sock, site)
        pool = WorkerPool(reactor, int(sys.argv[1]), sock, [os.path.abspath(__file__)],
                          drain_timeout=10)
        pool.startService()
        reactor.addSystemEventTrigger("before", "shutdown", pool.stopService)
        print(f"PORT {sock.getsockname()[1]}", flush=True)

    def stop_listening():
        port.stopListening()
        return drained()

    reactor.addSystemEventTrigger("before", "shutdown", stop_listening)
    reactor.run()


if __name__ == "__main__":
    main()
