"""What the real-Freqtrade tests and benches give the bots they run."""

# A strategy that is always in the market (every candle says enter): dry-run
# bots that keep trading, so their order and market-data traffic is steady.
# Written to ``AlwaysIn.py`` beside the bot's configuration.
ALWAYS_IN = '''
from freqtrade.strategy import IStrategy


class AlwaysIn(IStrategy):
    INTERFACE_VERSION = 3
    timeframe = "1m"
    minimal_roi = {"0": 0.5}
    stoploss = -0.5
    startup_candle_count = 20

    def populate_indicators(self, dataframe, metadata):
        return dataframe

    def populate_entry_trend(self, dataframe, metadata):
        dataframe["enter_long"] = 1
        return dataframe

    def populate_exit_trend(self, dataframe, metadata):
        dataframe["exit_long"] = 0
        return dataframe
'''
