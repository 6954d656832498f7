"""One configuration model: file, environment and command line."""

import os

import pytest

from bnproxy.config.reader import ConfigError
from bnproxy.tap import Options

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "bnproxy.example.toml")


def config(args=(), environ=None):
    options = Options()
    options.parseOptions(list(args))
    return options.config(environ or {})


def test_the_example_file_is_what_the_schema_says():
    """bnproxy.example.toml is made from the schema and the middlewares'
    declared options: a setting added, renamed or re-defaulted in one place
    and not the other fails here (regenerate with python -m
    bnproxy.config.example > bnproxy.example.toml)."""
    from bnproxy.config.example import render

    assert open(EXAMPLE).read() == render()


def test_the_example_file_covers_every_setting_and_loads(tmp_path):
    from bnproxy.config.schema import SETTINGS

    c = config(["--config", EXAMPLE])
    assert c.listen == ("tcp:8080",)
    assert [name for name, _ in c.middleware] == ["logger", "allowlist", "streams", "cache",
                                                  "ratelimit"]
    settings = dict(c.middleware)
    assert settings["cache"]["ttl"]["exchangeInfo"] == 60.0
    assert c.server.max_body == 1048576
    text = open(EXAMPLE).read()
    for setting in SETTINGS:
        if setting.toml:
            key = setting.toml.split(".")[-1]
            assert f"\n{key} =" in text or f"[{key}]" in text, f"{setting.toml} missing"


def test_the_example_builds_a_service(tmp_path):
    import attrs
    from twisted.internet import task

    from bnproxy.service import ProxyService
    c = attrs.evolve(config(["--config", EXAMPLE, "--state-dir", str(tmp_path)]), listen=())
    service = ProxyService(task.Clock(), c)
    assert [m.name for m in service.middlewares][2] == "streams"


def write(tmp_path, text):
    path = tmp_path / "bnproxy.toml"
    path.write_text(text)
    return str(path)


def test_precedence_is_command_line_then_environment_then_file(tmp_path):
    path = write(tmp_path, 'port = "7000"\nlog_format = "json"\nstate_dir = "/from/file"\n'
                           '[timeouts]\nconnect = 7\n[server]\nmax_body = 2048\n')
    c = config(["--config", path])
    assert (c.listen, c.log_format, c.connect_timeout, c.server.max_body) == (
        ("tcp:7000",), "json", 7.0, 2048)
    env = {"BNPROXY_PORT": "7100", "BNPROXY_CONNECT_TIMEOUT": "8", "BNPROXY_MAX_BODY": "4096"}
    c = config(["--config", path], env)
    assert (c.listen, c.connect_timeout, c.server.max_body, c.state_dir) == (
        ("tcp:7100",), 8.0, 4096, "/from/file")
    c = config(["--config", path, "--port", "7200", "--connect-timeout", "5"], env)
    assert (c.listen, c.connect_timeout) == (("tcp:7200",), 5.0)  # even an explicit default


def test_the_environment_can_name_the_file(tmp_path):
    path = write(tmp_path, "testnet = true\n")
    assert config([], {"BNPROXY_CONFIG": path}).testnet


def test_file_chain_and_middleware_tables_merge_with_inline_settings(tmp_path):
    path = write(tmp_path, 'chain = ["cache"]\n[middleware.cache]\nmax_bytes = 5000\n'
                           'stale_if_error = 3\n')
    assert config(["--config", path]).middleware == (
        ("cache", {"max_bytes": 5000, "stale_if_error": 3}),)
    c = config(["--config", path, "--middleware", "cache:max_bytes=9000"])
    assert c.middleware == (("cache", {"max_bytes": "9000", "stale_if_error": 3}),)


@pytest.mark.parametrize("text,message", [
    ("colour = 1\n", "colour: unknown setting"),
    ("[server]\nmax_bodies = 1\n", "server.max_bodies: unknown setting"),
    ("[server]\nmax_body = \"big\"\n", "server.max_body: expected a number"),
    ("[upstream]\nfutures = \"http://x\"\n", "upstream.futures: unknown market"),
    ("testnet = \"yes\"\n", "testnet: expected true or false"),
    ("port = [\n", "not valid TOML"),
    ("chain = [\"cache\"]\n[middleware.ratelimit]\nmargin = 0.2\n",
     "[middleware.ratelimit] is not in the chain"),
    ("[upstream]\nspot = \"ftp://x\"\n", "upstream.spot: 'ftp://x': scheme must be one of http"),
    ("[server]\nmax_headers = 0\n", "max-headers must be greater than 0"),
])
def test_every_file_error_names_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config(["--config", path])


def test_environment_errors_name_the_variable():
    with pytest.raises(ConfigError, match="BNPROXY_TESTNET"):
        config([], {"BNPROXY_TESTNET": "maybe"})
    with pytest.raises(ConfigError, match="environment: .*max-body"):
        config([], {"BNPROXY_MAX_BODY": "lots"})


def test_a_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="No such file"):
        config(["--config", str(tmp_path / "nope.toml")])


# -- --middleware adds to the chain; --middleware-chain replaces it ----------------------------

DEFAULT_NAMES = ["logger", "allowlist", "streams", "cache", "ratelimit"]


def names(c):
    return [name for name, _ in c.middleware]


def test_the_readme_plugin_example_keeps_the_allowlist_and_the_rate_limiter():
    """README: ``twistd -n bnproxy --middleware stamp:value=xyz`` adds the
    stamp; it used to replace the whole chain (no allowlist, no budget)."""
    c = config(["--middleware", "stamp:value=xyz"])
    assert names(c) == ["logger", "allowlist", "stamp", "streams", "cache", "ratelimit"]
    assert dict(c.middleware)["stamp"] == {"value": "xyz"}


def test_the_readme_environment_example_sets_the_cache_and_drops_nothing():
    c = config([], {"BNPROXY_MIDDLEWARE": "logger allowlist cache:ttl.depth=0.5"})
    assert names(c) == DEFAULT_NAMES
    assert dict(c.middleware)["cache"] == {"ttl.depth": "0.5"}
    # the README's example now: a setting and a removal, the rest kept
    c = config([], {"BNPROXY_MIDDLEWARE": "cache:ttl.depth=0.5 -streams"})
    assert names(c) == ["logger", "allowlist", "cache", "ratelimit"]
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    assert 'BNPROXY_MIDDLEWARE="cache:ttl.depth=0.5 -streams"' in readme


def test_a_middleware_is_removed_only_by_name():
    c = config(["--middleware", "-ratelimit", "--middleware", "-streams"])
    assert names(c) == ["logger", "allowlist", "cache"]
    c = config([], {"BNPROXY_MIDDLEWARE": "-allowlist stamp"})
    assert names(c) == ["logger", "stamp", "streams", "cache", "ratelimit"]
    with pytest.raises(ConfigError, match="'nope' is not in the chain"):
        config(["--middleware", "-nope"])
    with pytest.raises(SystemExit, match="a removal takes no settings"):
        config(["--middleware", "-cache:max_bytes=1"])


def test_the_whole_chain_is_given_with_middleware_chain(tmp_path):
    assert names(config(["--middleware-chain", "logger cache"])) == ["logger", "cache"]
    assert names(config(["--middleware-chain", "cache", "--middleware-chain", "ratelimit",
                         "--middleware", "stamp"])) == ["stamp", "cache", "ratelimit"]
    c = config([], {"BNPROXY_MIDDLEWARE_CHAIN": "allowlist cache:max_bytes=5",
                    "BNPROXY_MIDDLEWARE": "logger"})
    assert c.middleware == (("allowlist", {}), ("logger", {}), ("cache", {"max_bytes": "5"}))
    path = write(tmp_path, 'chain = ["cache", "ratelimit"]\n')
    assert names(config(["--config", path, "--middleware", "stamp"])) == [
        "stamp", "cache", "ratelimit"]
    with pytest.raises(SystemExit, match="middleware-chain names a middleware twice"):
        config(["--middleware-chain", "cache cache"])


def test_a_chain_without_its_guards_warns_at_start_and_in_health(tmp_path):
    from twisted.internet import task
    from twisted.logger import formatEvent, globalLogPublisher

    from bnproxy.service import ProxyService

    def start(args):
        import attrs
        c = attrs.evolve(config([*args, "--state-dir", str(tmp_path)]), listen=(),
                         middleware=tuple((n, s) for n, s in config(args).middleware
                                          if n != "streams"))
        seen = []
        globalLogPublisher.addObserver(seen.append)
        try:
            service = ProxyService(task.Clock(), c)
        finally:
            globalLogPublisher.removeObserver(seen.append)
        warnings = [formatEvent(e) for e in seen if "middleware chain has" in formatEvent(e)]
        return service.health.document()["middleware"]["guards"], warnings

    guards, warnings = start([])
    assert guards == {"missing": []} and not warnings
    guards, warnings = start(["--middleware", "-ratelimit"])
    assert guards["missing"] == ["ratelimit"] and "weight limits" in guards["warning"]
    assert len(warnings) == 1 and "no ratelimit" in warnings[0]
    guards, warnings = start(["--middleware-chain", "logger cache"])
    assert guards["missing"] == ["allowlist", "ratelimit"]
    assert "every address" in warnings[0]


@pytest.mark.parametrize("option,refused,accepted", [
    ("--response-timeout", "1e308", "3600"),
    ("--connect-timeout", "3601", "0.5"),
    ("--body-timeout", "inf", "30"),
    ("--header-timeout", "86400", "60"),
    ("--client-body-timeout", "0", "60"),
    ("--keepalive-timeout", "1e9", "75"),
    ("--send-timeout", "-1", "60"),
    ("--drain-timeout", "-0.5", "0"),
    ("--drain-timeout", "1e300", "30"),
    ("--metrics-clients", "1000000000000", "10000"),
    ("--metrics-clients", "1e12", "64"),
    ("--max-body", str(2**40), str(2**20)),
    ("--max-headers", "1000000", "100"),
    ("--max-header-bytes", str(2**30), "32768"),
    ("--max-connections-per-client", "10000000", "256"),
    ("--shared-state-deadline", "5", "0.1"),
    ("--shared-state-min-instances", "0", "3"),
    ("--workers", "65", "2"),
])
def test_every_number_has_sensible_bounds(option, refused, accepted):
    with pytest.raises(SystemExit) as e:
        config([option, refused])
    assert option in str(e.value) and "\n" not in str(e.value)
    config([option, accepted])


def test_every_numeric_setting_has_an_upper_bound():
    """A number without a ceiling let --response-timeout 1e308 through."""
    from bnproxy.config.schema import SETTINGS, SettingError

    numeric = [s for s in SETTINGS if isinstance(s.default, (int, float))
               and not isinstance(s.default, bool)]
    assert len(numeric) >= 15
    for setting in numeric:
        with pytest.raises(SettingError):
            setting.coerce("1e300" if isinstance(setting.default, float) else str(10**20))


def test_each_default_is_declared_once_in_the_schema():
    """The model takes every setting's default from the schema: a literal
    default in config/model.py (a second declaration, which drifts) fails
    here, and so does a model default different from the schema's."""
    import ast
    import inspect

    import attrs

    from bnproxy.config import model
    from bnproxy.config.schema import BY_ATTR, DEFAULT_CHAIN, DEFAULT_LISTEN
    from bnproxy.testing.harness import DEFAULT

    tree = ast.parse(inspect.getsource(model))
    module_names = {t.id: node.value for node in tree.body if isinstance(node, ast.AnnAssign)
                    and isinstance(t := node.target, ast.Name) and node.value is not None}
    own = {"ProxyConfig.max_connections_per_host", "ProxyConfig.middleware",
           "ProxyConfig.server"}
    checked = 0
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        prefix = "server." if cls.name == "ServerLimits" else ""
        for field in (n for n in cls.body if isinstance(n, ast.AnnAssign)):
            name = f"{cls.name}.{field.target.id}"
            value = field.value
            if isinstance(value, ast.Name) and value.id in module_names:
                value = module_names[value.id]
            calls = [n for n in ast.walk(value) if isinstance(n, ast.Call)
                     and isinstance(n.func, ast.Name) and n.func.id == "default"]
            names = {id(a) for c in calls for a in c.args}
            literals = [n for n in ast.walk(value) if isinstance(n, ast.Constant)
                        and id(n) not in names]
            if name in own or ast.unparse(field.value) == "DEFAULT_LISTEN":
                continue
            assert calls and not literals, f"{name} declares its default again: " \
                f"{ast.unparse(field.value)} (use default({prefix + field.target.id!r}))"
            checked += 1
    assert checked >= 25
    for attr, setting in BY_ATTR.items():
        holder = model.ProxyConfig()
        for part in attr.split("."):
            holder = getattr(holder, part)
        assert holder == setting.default or dict(holder) == setting.default, attr
    assert model.ProxyConfig().listen == DEFAULT_LISTEN
    assert [n for n, _ in model.ProxyConfig().middleware] == list(DEFAULT_CHAIN) == list(DEFAULT)
    assert attrs.fields(model.ServerLimits)  # (nested settings are covered above)


def test_a_middleware_number_must_be_finite(tmp_path):
    """``inf`` passed every minimum (and 1e999 is inf in TOML's float)."""
    import attrs
    from twisted.internet import task

    from bnproxy.service import ProxyService

    for value in ("inf", "-inf", "nan", "1e999"):
        c = attrs.evolve(config(["--middleware-chain", f"cache:stale_if_error={value}",
                                 "--state-dir", str(tmp_path)]), listen=())
        with pytest.raises(ConfigError, match="middleware.cache.stale_if_error: expected a "
                                              "finite number"):
            ProxyService(task.Clock(), c)


def test_removing_a_middleware_keeps_the_files_table_quiet():
    """The example file has a [middleware.streams] table; ``-streams``
    removes the middleware, its table is left unused (a table for a
    middleware never in the chain is still an error)."""
    c = config(["--config", EXAMPLE, "--middleware", "-streams"])
    assert names(c) == ["logger", "allowlist", "cache", "ratelimit"]
    with pytest.raises(ConfigError, match=r"\[middleware.streams\] is not in the chain"):
        config(["--config", EXAMPLE, "--middleware-chain", "logger cache ratelimit allowlist"])


def test_the_streams_keep_their_symbol_lists_in_the_state_dir(tmp_path):
    """--state-dir sets [middleware.streams] symbols_file unless given; the
    offline demo (a new fake exchange at each start) keeps nothing."""
    streams = dict(config(["--state-dir", str(tmp_path)]).middleware)["streams"]
    assert streams["symbols_file"] == os.path.join(str(tmp_path), "bnproxy-symbols.json")
    given = dict(config(["--state-dir", str(tmp_path), "--middleware",
                         "streams:symbols_file=none"]).middleware)["streams"]
    assert given["symbols_file"] == "none"
    demo = dict(config(["--simulated-exchange"]).middleware)["streams"]
    assert "symbols_file" not in demo
