"""The ccxt/Freqtrade configuration that points every Binance URL at bnproxy."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def ccxt_urls(base: str) -> dict[str, str]:
    """Every key of ccxt's ``binance`` ``urls.api``, pointed at the proxy.

    The implicit prefixes route most keys; ``fapiData`` and ``dapiData`` use
    the explicit ``/usdm`` and ``/coinm`` mounts because ``/futures/data``
    exists on both futures hosts.
    """
    b = base.rstrip("/")
    return {
        "public": f"{b}/api/v3",
        "private": f"{b}/api/v3",
        "v1": f"{b}/api/v1",
        "sapi": f"{b}/sapi/v1",
        "sapiV2": f"{b}/sapi/v2",
        "sapiV3": f"{b}/sapi/v3",
        "sapiV4": f"{b}/sapi/v4",
        "fapiPublic": f"{b}/fapi/v1",
        "fapiPublicV2": f"{b}/fapi/v2",
        "fapiPublicV3": f"{b}/fapi/v3",
        "fapiPrivate": f"{b}/fapi/v1",
        "fapiPrivateV2": f"{b}/fapi/v2",
        "fapiPrivateV3": f"{b}/fapi/v3",
        "fapiData": f"{b}/usdm/futures/data",
        "dapiPublic": f"{b}/dapi/v1",
        "dapiPrivate": f"{b}/dapi/v1",
        "dapiPrivateV2": f"{b}/dapi/v2",
        "dapiData": f"{b}/coinm/futures/data",
        "eapiPublic": f"{b}/eapi/v1",
        "eapiPrivate": f"{b}/eapi/v1",
        "papi": f"{b}/papi/v1",
        "papiV2": f"{b}/papi/v2",
    }


def ccxt_ws_urls(base: str) -> dict[str, str]:
    """ccxt.pro's ``urls.api.ws`` market-stream keys, pointed at the proxy's
    websocket gateway (the same port; ws:// for http://, wss:// for https://).
    ccxt adds ``/public`` or ``/market`` (``/private`` for futures user
    data, relayed one to one) to the USD-M one itself; the websocket API
    (``ws-api``) and spot user data still go to Binance."""
    b = base.rstrip("/")
    ws = "wss://" + b[len("https://"):] if b.startswith("https://") else \
        "ws://" + b.removeprefix("http://")
    return {"spot": f"{ws}/ws", "margin": f"{ws}/ws", "linear": f"{ws}/usdm/ws",
            "inverse": f"{ws}/coinm/ws"}


def exchange_block(url: str, futures: bool = False) -> dict[str, Any]:
    """Freqtrade's ``exchange`` section for a bot behind bnproxy."""
    urls = {"api": {**ccxt_urls(url), "ws": ccxt_ws_urls(url)}}
    ccxt_config: dict[str, Any] = {
        # The proxy governs the weight budget for the whole fleet.
        "enableRateLimit": False,
        "urls": urls,
        "options": {
            # Load only the markets the bot trades.
            "fetchMarkets": {"types": ["linear"] if futures else ["spot"]},
        },
    }
    return {
        "name": "binance",
        "key": "",
        "secret": "",
        # bnproxy serves REST and the market streams (its websocket gateway):
        # Freqtrade's websocket client connects to the proxy too.
        "enable_ws": True,
        "ccxt_config": ccxt_config,
        "ccxt_async_config": ccxt_config,
    }


DESCRIPTION = "Print Freqtrade's exchange block pointing at bnproxy."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="the proxy, e.g. http://127.0.0.1:8080")
    parser.add_argument("--futures", action="store_true", help="USD-M futures instead of spot")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not args.url.startswith(("http://", "https://")):
        parser.error("--url must start with http:// or https://")
    json.dump({"exchange": exchange_block(args.url, args.futures)}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
