"""README.md stays true to the code where drift is easy to check.

The table of contents is made from the file's ``##`` headings:
``python tests/test_readme.py`` rewrites it after a section is added, renamed
or removed."""

import io
import json
import os
import re
import shlex
import sys
from contextlib import redirect_stdout

from bnproxy.config.example import options_table

README = os.path.join(os.path.dirname(__file__), "..", "README.md")
DOCKERFILE = os.path.join(os.path.dirname(__file__), "..", "Dockerfile")
TOC_START, TOC_END = "<!-- contents -->\n", "<!-- end of contents -->\n"
TOC_TITLE = "Contents"


def all_headings(text: str) -> list[tuple[str, str]]:
    """The file's headings as (``#``s, title), in order; lines inside fenced
    code blocks are not headings."""
    found, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"(#{1,6}) (.+)", line)):
            found.append((m.group(1), m.group(2).strip()))
    return found


def headings(text: str, level: str = "##") -> list[str]:
    """The titles of the headings of exactly ``level``, in order."""
    return [title for hashes, title in all_headings(text) if hashes == level]


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (letters,
    digits, spaces, ``-`` and ``_`` kept), spaces as ``-``."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor the file's headings (any level) give, duplicates numbered
    as GitHub numbers them."""
    seen: dict[str, int] = {}
    result = set()
    for _, heading in all_headings(text):
        base = anchor(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        result.add(base if n == 0 else f"{base}-{n}")
    return result


def expected_toc(text: str) -> str:
    """The table of contents: a link to every ``##`` section but itself."""
    return "".join(f"- [{h}](#{anchor(h)})\n" for h in headings(text) if h != TOC_TITLE)


def with_toc(text: str) -> str:
    """``text`` with its table of contents regenerated."""
    start = text.index(TOC_START) + len(TOC_START)
    end = text.index(TOC_END)
    return text[:start] + expected_toc(text) + text[end:]


def block_after(text: str, marker: str) -> list[str]:
    """The lines of the first ``sh`` block after ``marker``."""
    rest = text[text.index(marker):]
    start = rest.index("```sh\n") + len("```sh\n")
    return rest[start:rest.index("```\n", start)].splitlines()


def readme() -> str:
    with open(README) as f:
        return f.read()


def test_the_options_table_is_the_schema():
    assert options_table() in readme(), \
        "regenerate: python -m bnproxy.config.example --readme README.md"


def test_the_readme_shows_both_setups():
    text = readme()
    assert "pip install .\ntwistd -n bnproxy --port tcp:8080:interface=127.0.0.1\n" in text
    assert 'pip install ".[test]" ./tests/plugin_pkg\npytest -q' in text


def test_the_contents_list_every_section_and_only_those():
    text = readme()
    assert text == with_toc(text), "regenerate: python tests/test_readme.py"
    toc = text[text.index(TOC_START):text.index(TOC_END)]
    links = re.findall(r"\]\(#([^)]+)\)", toc)
    assert len(links) == len(headings(text)) - 1 > 10
    assert set(links) <= anchors(text)  # every link lands on a heading


def test_every_link_inside_the_readme_lands_on_a_heading():
    text = readme()
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links and links - anchors(text) == set()


def test_a_heading_in_a_code_block_is_not_a_section():
    text = "## One\n```python\n## not a heading\n```\n## Two, (2)\n### Three\n"
    assert headings(text) == ["One", "Two, (2)"]
    assert expected_toc(text) == "- [One](#one)\n- [Two, (2)](#two-2)\n"


def test_the_quick_start_is_five_commands_that_fit_together():
    from bnproxy.tap import Options

    lines = block_after(readme(), "## Quick start for Freqtrade")
    assert len(lines) == 5, lines
    clone, install, proxy, generate, trade = (shlex.split(line) for line in lines)
    assert clone[:2] == ["git", "clone"] and clone[-3:] == ["&&", "cd", "bnproxy"]
    assert install == ["pip", "install", "."]

    # the proxy: a command twistd's bnproxy plugin accepts, listening on loopback only
    assert proxy[:3] == ["twistd", "-n", "bnproxy"]
    options = Options()
    options.parseOptions(proxy[3:])
    config = options.config({})
    assert config.listen == ("tcp:8080:interface=127.0.0.1",)

    # the Freqtrade block: made by the helper for the proxy just started
    assert generate[:3] == ["python", "-m", "bnproxy"] and generate[-2] == ">"
    from bnproxy.__main__ import main

    out = io.StringIO()
    with redirect_stdout(out):
        assert main(generate[3:-2]) == 0
    urls = json.loads(out.getvalue())["exchange"]["ccxt_config"]["urls"]["api"]
    assert urls["public"] == "http://127.0.0.1:8080/api/v3"
    assert urls["private"] == "http://127.0.0.1:8080/api/v3"  # signed calls too

    # Freqtrade reads the file just written, the bot's own configuration last (it wins)
    assert trade[:2] == ["freqtrade", "trade"]
    assert trade[2:] == ["-c", generate[-1], "-c", "config.json"]


def test_the_docker_line_publishes_the_image_port_on_loopback():
    line, = block_after(readme(), "With Docker")
    with open(DOCKERFILE) as f:
        dockerfile = f.read()
    port = re.search(r"^EXPOSE (\d+)$", dockerfile, re.M).group(1)
    assert f"BNPROXY_PORT={port}" in dockerfile
    build, run = (shlex.split(part) for part in line.split(" && "))
    assert build == ["docker", "build", "-t", "bnproxy", "."]
    assert run[run.index("-p") + 1] == f"127.0.0.1:{port}:{port}"
    state = re.search(r"BNPROXY_STATE_DIR=(\S+)", dockerfile).group(1)
    assert run[run.index("-v") + 1].endswith(":" + state)  # bans survive a new container
    assert run[-1] == "bnproxy"


if __name__ == "__main__":  # python tests/test_readme.py: regenerate the contents
    text = readme()
    with open(README, "w") as f:
        f.write(with_toc(text))
    sys.stdout.write(expected_toc(text))
