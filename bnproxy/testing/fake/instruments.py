"""The fake exchange's instruments and Binance's number formats."""

from __future__ import annotations

import attrs

SPOT_DECIMALS = 8  # spot prints every price and quantity with 8 decimals


@attrs.frozen
class Instrument:
    """One tradable symbol. Prices are integer ticks of ``10**-price_dp``,
    quantities integer steps of ``10**-qty_dp``."""

    market: str  # spot, usdm, coinm
    symbol: str
    base: str
    quote: str
    price_dp: int
    qty_dp: int
    start_price: int  # ticks
    contract_size: int = 0  # COIN-M: USD per contract

    @property
    def pair(self) -> str:
        return self.symbol.split("_")[0]

    @property
    def stream_name(self) -> str:
        return self.symbol.lower()

    def price(self, ticks: int) -> str:
        return _fmt(ticks, self.price_dp, SPOT_DECIMALS if self.market == "spot" else self.price_dp)

    def qty(self, steps: int) -> str:
        return _fmt(steps, self.qty_dp, SPOT_DECIMALS if self.market == "spot" else self.qty_dp)

    def quote_amount(self, units: int) -> str:
        """``units`` of 10**-(price_dp+qty_dp) (a price times a quantity)."""
        dp = self.price_dp + self.qty_dp
        out_dp = SPOT_DECIMALS if self.market == "spot" else 8
        if dp > out_dp:
            units //= 10 ** (dp - out_dp)
            dp = out_dp
        return _fmt(units, dp, out_dp)

    def parse_price(self, text: str) -> int:
        return _parse(text, self.price_dp)

    def parse_qty(self, text: str) -> int:
        return _parse(text, self.qty_dp)


def _fmt(value: int, dp: int, out_dp: int) -> str:
    sign = "-" if value < 0 else ""
    value = abs(value)
    if dp == 0:
        whole, frac = value, ""
    else:
        whole, rest = divmod(value, 10 ** dp)
        frac = f"{rest:0{dp}d}"
    frac = (frac + "0" * out_dp)[:out_dp]
    return f"{sign}{whole}.{frac}" if out_dp else f"{sign}{whole}"


def _parse(text: str, dp: int) -> int:
    """Exact decimal text → integer units; ValueError if not representable."""
    text = text.strip()
    if not text or text.count(".") > 1 or text.startswith(("+", "-")) and len(text) == 1:
        raise ValueError(text)
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0")
    if len(frac) > dp or not (whole or frac) or not (whole + frac).lstrip("-").isdigit():
        raise ValueError(text)
    return int(whole or "0") * 10 ** dp + int((frac + "0" * dp)[:dp] or "0")


# Order-size limits in quote units, so every pair can be traded with an
# ordinary stake (Freqtrade's default 10-100 USDT): the smallest order is a
# few quote units, the largest far above any stake, whatever the price.
MIN_NOTIONAL = {"USDT": "5", "BTC": "0.0001", "ETH": "0.001", "BNB": "0.01"}
LOT_MAX_QUOTE = 9_000_000  # LOT_SIZE maxQty, as a notional at the start price
MARKET_LOT_MAX_QUOTE = 1_000_000  # MARKET_LOT_SIZE maxQty, likewise


def min_notional(quote: str, decimals: int) -> str:
    """The minimum order value in ``quote``, printed with ``decimals``
    (spot prints 8, USD-M as few as needed)."""
    text = MIN_NOTIONAL.get(quote, "5")
    if not decimals:
        return text
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac:0<{decimals}}"


def max_steps(inst: Instrument, quote_units: int) -> int:
    """The quantity (in steps) worth ``quote_units`` at the start price."""
    price = inst.start_price / 10 ** inst.price_dp
    return max(1, int(quote_units / price)) * 10 ** inst.qty_dp


def min_notional_units(inst: Instrument) -> int:
    """The minimum order value in units of 10**-(price_dp+qty_dp) quote
    (the units of a price in ticks times a quantity in steps)."""
    return _parse(MIN_NOTIONAL.get(inst.quote, "5"), inst.price_dp + inst.qty_dp)


_SPOT = [
    ("BTC", 2, 5, 65000_00), ("ETH", 2, 4, 3500_00), ("BNB", 2, 3, 600_00),
    ("SOL", 2, 3, 150_00), ("XRP", 4, 1, 6000), ("ADA", 4, 1, 4500),
    ("DOGE", 5, 0, 15000), ("TRX", 5, 1, 12000), ("DOT", 3, 2, 7000),
    ("LINK", 2, 2, 1500), ("LTC", 2, 3, 80_00), ("AVAX", 2, 2, 35_00),
    ("ATOM", 3, 2, 8000), ("UNI", 3, 2, 9000), ("ETC", 2, 2, 25_00),
    ("XLM", 4, 0, 1100), ("FIL", 3, 2, 5500), ("NEAR", 3, 1, 6000),
    ("APT", 4, 2, 90000), ("ARB", 4, 1, 9000), ("OP", 4, 2, 21000),
    ("POL", 4, 1, 4500), ("SHIB", 8, 0, 1800), ("PEPE", 8, 0, 1100), ("WIF", 4, 1, 21000),
    ("SUI", 4, 1, 35000), ("SEI", 4, 1, 4000), ("TIA", 4, 2, 60000), ("INJ", 3, 2, 22000),
    ("RENDER", 3, 2, 7000), ("FET", 4, 1, 13000), ("AAVE", 2, 3, 150_00),
    ("LDO", 4, 2, 18000), ("CRV", 4, 1, 4000), ("SAND", 4, 0, 3500), ("MANA", 4, 0, 3800),
    ("GALA", 5, 0, 3000), ("IMX", 4, 2, 15000), ("STX", 4, 1, 17000), ("HBAR", 5, 0, 9000),
]


def default_instruments() -> list[Instrument]:
    out = [Instrument("spot", f"{b}USDT", b, "USDT", pdp, qdp, p) for b, pdp, qdp, p in _SPOT]
    out.append(Instrument("spot", "ETHBTC", "ETH", "BTC", 5, 4, 5385))
    # Quantity steps small enough that 10 USDT buys at least one (Freqtrade's
    # smallest usual stake); real Binance steps are coarser for BTC and SOL.
    for b, pdp, qdp, p in [("BTC", 1, 4, 650000), ("ETH", 2, 3, 3500_00), ("BNB", 2, 2, 600_00),
                           ("SOL", 3, 2, 150_000), ("XRP", 4, 1, 6000)]:
        out.append(Instrument("usdm", f"{b}USDT", b, "USDT", pdp, qdp, p))
    out.append(Instrument("coinm", "BTCUSD_PERP", "BTC", "USD", 1, 0, 650000, contract_size=100))
    return out
