from twisted.application.service import ServiceMaker

bnproxy = ServiceMaker("bnproxy", "bnproxy.tap", "Binance API proxy for trading bots", "bnproxy")
