from twisted.application.service import ServiceMaker

bnproxy = ServiceMaker("bnproxy", "bnproxy.tap", "Binance API proxy for trading bots", "bnproxy")
bnproxy_exchange = ServiceMaker("bnproxy-exchange", "bnproxy.testing.fake.tap",
                                "Fake Binance exchange for tests and demos", "bnproxy-exchange")
