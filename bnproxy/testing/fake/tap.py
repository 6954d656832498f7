"""``twistd bnproxy-exchange``: the fake exchange as a process."""

from __future__ import annotations

from twisted.application import service
from twisted.python import usage


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = "A fake Binance exchange (REST and websocket streams) for tests and demos."
    optParameters = [
        ["port", "p", "9000", "Where to listen: digits (tcp:N) or an endpoint string."],
        ["seed", None, 1, "Seed of the simulated market.", int],
        ["trade-rate", None, 0.5, "Expected trades per symbol per 100 ms tick.", float],
        ["ban-scale", None, 1.0, "Multiply ban durations (tests use small values).", float],
        ["spot-weight-limit", None, 6000, "Spot request weight per minute per IP.", int],
        ["futures-weight-limit", None, 2400, "USD-M/COIN-M weight per minute per IP.", int],
        ["ws-time-scale", None, 1.0, "Multiply websocket ping and lifetime periods.", float],
        ["tls-cert", None, None, "Serve https/wss with this certificate (PEM; implies --tls)."],
        ["tls-key", None, None, "The private key (PEM) of --tls-cert."],
        ["tls-dir", None, ".", "With --tls and no --tls-cert: where to write the throwaway CA "
                               "(fake-exchange-ca.pem), certificate and key."],
    ]
    optFlags = [
        ["tls", None, "Serve https and wss (a throwaway CA and certificate for "
                      "127.0.0.1/localhost unless --tls-cert/--tls-key are given)."],
    ]

    def postOptions(self) -> None:
        if bool(self["tls-cert"]) != bool(self["tls-key"]):
            raise usage.UsageError("--tls-cert and --tls-key go together")
        if self["tls-cert"]:
            self["tls"] = True

    def opt_key(self, value: str) -> None:
        """KEY=SECRET: an API key pair the exchange accepts (repeatable)."""
        key, sep, secret = value.partition("=")
        if not sep:
            raise usage.UsageError("--key expects KEY=SECRET")
        self.setdefault("keys", {})[key] = secret


class ExchangeService(service.Service):
    def __init__(self, reactor, options) -> None:
        from bnproxy.testing.fake.exchange import FakeExchange

        self.reactor = reactor
        self.exchange = FakeExchange(
            reactor, seed=options["seed"], trade_rate=options["trade-rate"],
            ban_scale=options["ban-scale"], keys=options.get("keys"),
            weight_limits={"spot": options["spot-weight-limit"],
                           "usdm": options["futures-weight-limit"],
                           "coinm": options["futures-weight-limit"]},
            ws_time_scale=options["ws-time-scale"])
        self.description = options["port"]
        self.tls = None
        if options["tls"]:
            from bnproxy.testing.fake.tls import TlsFiles, make_certificates

            if options["tls-cert"]:
                self.tls = TlsFiles(options["tls-cert"], options["tls-key"])
            else:
                self.tls = make_certificates(options["tls-dir"])

    def startService(self) -> None:
        from twisted.internet.endpoints import serverFromString

        super().startService()
        desc = self.description
        endpoint = serverFromString(self.reactor, f"tcp:{desc}" if desc.isdigit() else desc)
        self.exchange.start()
        self.exchange.listen(endpoint, tls=self.tls)
        if self.tls is not None and self.tls.ca:
            from twisted.logger import Logger

            Logger(namespace="bnproxy.testing.fake").info(
                "serving https/wss; clients must trust {ca}", ca=self.tls.ca)

    def stopService(self) -> None:
        self.exchange.stop()
        if self.exchange.port is not None:
            return self.exchange.port.stopListening()
        return super().stopService()


def makeService(options: Options):
    from twisted.internet import reactor

    return ExchangeService(reactor, options)
