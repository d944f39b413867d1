"""The repository's promises to a newcomer stay true: README commands, CI, shipped configs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from simpleproxy.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    return re.findall(r"```\n(python3 -m venv [^\n]+)\n```", (ROOT / "README.md").read_text())


def test_ci_runs_exactly_the_readme_test_command() -> None:
    commands = readme_commands()
    assert len(commands) == 2, commands
    install_and_run, install_and_test = commands
    assert install_and_run.endswith("simpleproxy run") and "pytest" in install_and_test
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install_and_test in ci_lines


@pytest.mark.parametrize("path", sorted((ROOT / "conf").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_configuration_loads(path: Path) -> None:
    assert load_config(path).routes


def test_every_config_key_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    from dataclasses import fields

    from simpleproxy import config as c

    for cls in (c.ServerSettings, c.HeaderSettings, c.LogSettings, c.Timeouts, c.PassiveHealth, c.RetryPolicy, c.UpstreamTLS,
                c.CacheSettings, c.RouteCache):
        for f in fields(cls):
            assert re.search(rf"`([a-z_]+\.)?{f.name}`", readme), f"{cls.__name__}.{f.name}"
    for f in fields(c.HealthCheck):
        name = "start" if f.name == "start_healthy" else f.name
        assert re.search(rf"\b{name}: ", readme), f"HealthCheck.{f.name}"
    for cls in (c.RateLimit, c.AccessRules):
        for f in fields(cls):
            if f.name not in ("where", "rate_text"):
                assert f"| `{f.name}` |" in readme, f"{cls.__name__}.{f.name}"
    for f in fields(c.AdminSettings):
        assert f"`admin.{f.name}`" in readme, f"AdminSettings.{f.name}"
    for f in fields(c.HTTPSListener):
        name = "address" if f.name == "addresses" else f.name
        assert f"`https.{name}`" in readme, f"HTTPSListener.{f.name}"
    for f in fields(c.BotSettings):
        name = f.name.replace("ban_", "ban.") if f.name.startswith("ban_") else ("ban.max_tracked" if f.name == "max_tracked" else f.name)
        assert f"`{name}`" in readme, f"BotSettings.{f.name}"
    for key in ("rules[i].name", "rules[i].match", "rules[i].action", "baseline", "redirect_https", "hsts", "client_cert", "servers", "keepalive", "host", "path", "upstream", "respond", "strip_prefix", "host_header", "http",
                "balance", "hash_on", "max_connections", "health", "sticky.cookie", "timeouts.total", "tls.ca"):
        assert f"`{key}`" in readme, key


def test_every_file_the_package_needs_is_installed() -> None:
    """setup.py finds the packages; data files must be named in package_data (tests run from the checkout)."""
    setup_py = (ROOT / "setup.py").read_text()
    assert 'find_packages(include=["simpleproxy", "simpleproxy.*"])' in setup_py
    for path in (ROOT / "simpleproxy").rglob("*"):
        if path.is_file() and path.suffix not in (".py", ".pyc", ".png") and "__pycache__" not in path.parts:
            package = ".".join(path.parent.relative_to(ROOT).parts)
            assert re.search(rf'"{re.escape(package)}": \[[^]]*"\*{re.escape(path.suffix)}"', setup_py), path


def test_the_readme_reference_configuration_passes_check_once_its_files_exist(tmp_path) -> None:
    import trustme

    from simpleproxy.config import parse_config

    readme = (ROOT / "README.md").read_text()
    reference = re.search(r"## Configuration\n\n```yaml\n(.*?)```", readme, re.S).group(1)  # type: ignore[union-attr]
    assert "/etc/simpleproxy/app.pem" in reference  # the placeholders the README names
    leaf = trustme.CA().issue_cert("app.example.com")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "app.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "app.key"))
    config = parse_config(reference.replace("/etc/simpleproxy/", f"{tmp_path}/"))
    assert [route.path for route in config.routes] == ["/api", "/static", "/"] and config.https is not None


def test_the_welcome_page_says_where_it_comes_from_and_what_overrides_it() -> None:
    config = load_config(ROOT / "conf" / "simpleproxy.yaml")
    body = config.routes[-1].respond.body  # type: ignore[union-attr]
    assert "shipped default configuration (conf/simpleproxy.yaml" in body
    assert "simpleproxy.yaml in the directory you start" in body and "--config FILE" in body
