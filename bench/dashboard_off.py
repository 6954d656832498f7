"""``python bench/dashboard_off.py TWISTD-ARGS…``: twistd with the dashboard
feed switched off (no sampling, no error observer): the baseline of
bench/dashboard_cost.py."""

import sys

from twisted.scripts.twistd import run

from bnproxy.dashboard.feed import DashboardFeed

DashboardFeed.startService = lambda self: None  # never samples
DashboardFeed.observer = lambda self, answered: answered  # nothing on the request path

if __name__ == "__main__":
    sys.argv[0] = "twistd"
    run()
