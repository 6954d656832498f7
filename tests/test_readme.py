"""README.md stays true to the code where drift is easy to check."""

import os

from bnproxy.config.example import options_table

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def test_the_options_table_is_the_schema():
    assert options_table() in open(README).read(), \
        "regenerate: python -m bnproxy.config.example --readme README.md"


def test_the_readme_shows_both_setups():
    text = open(README).read()
    assert "pip install .\ntwistd -n bnproxy --port 8080" in text
    assert 'pip install ".[test]" ./tests/plugin_pkg\npytest -q' in text
