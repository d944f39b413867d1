"""Bot checks: user agents, missing fields, and the fail2ban-style ban under a fake clock."""

from __future__ import annotations

import pytest

from conftest import FakeClock

from simpleproxy.config import BotSettings, config_from_dict
from simpleproxy.errors import BadRequest, Banned, ConfigError, Forbidden
from simpleproxy.security.bots import BanList, BotGuard


def guard(**settings) -> BotGuard:
    return BotGuard(BotSettings(**settings), None)


def test_user_agent_lists_and_missing_fields() -> None:
    g = guard(deny_agents=("(?i)python-requests", "curl/"), allow_agents=("Pingdom",), require_user_agent=True)
    g.check("1.2.3.4", {"HTTP_USER_AGENT": "Mozilla/5.0"}, "h")
    with pytest.raises(Forbidden, match="user agent"):
        g.check("1.2.3.4", {"HTTP_USER_AGENT": "Python-Requests/2.31"}, "h")
    g.check("1.2.3.4", {"HTTP_USER_AGENT": "curl/8 (Pingdom)"}, "h")  # allowed first
    with pytest.raises(Forbidden, match="User-Agent header is required"):
        g.check("1.2.3.4", {"HTTP_USER_AGENT": "  "}, "h")
    with pytest.raises(BadRequest, match="Host"):
        g.check("1.2.3.4", {"HTTP_USER_AGENT": "Mozilla/5.0"}, "")
    guard(require_host=False).check("1.2.3.4", {}, "")


def test_the_ban_counts_bad_answers_in_a_window_then_refuses_for_a_while() -> None:
    clock = FakeClock(100.0)
    bans = BanList(after=3, window=10, duration=60, statuses=frozenset({404, 429}), max_tracked=100, clock=clock)
    g = BotGuard(BotSettings(), bans)
    for status in (404, 200, 404):
        g.observe("6.6.6.6", status)
    clock.now += 11  # both 404s left the window
    g.observe("6.6.6.6", 429)
    g.observe("6.6.6.6", 404)
    g.check("6.6.6.6", {"HTTP_USER_AGENT": "x"}, "h")  # two within the window: not yet
    g.observe("6.6.6.6", 404)  # three within ten seconds
    with pytest.raises(Forbidden) as info:
        g.check("6.6.6.6", {"HTTP_USER_AGENT": "x"}, "h")
    assert dict(info.value.headers)["Retry-After"] == "61"
    g.check("7.7.7.7", {"HTTP_USER_AGENT": "x"}, "h")  # others are untouched
    assert isinstance(info.value, Banned)  # which the app does not count again: a ban must end
    clock.now += 60
    g.check("6.6.6.6", {"HTTP_USER_AGENT": "x"}, "h")  # the ban ran out


def test_the_ban_list_is_bounded() -> None:
    bans = BanList(after=1, window=10, duration=60, statuses=frozenset({403}), max_tracked=100, clock=FakeClock(100.0))
    for i in range(1000):
        bans.observe(f"10.0.{i // 256}.{i % 256}", 403)
    assert len(bans) == 100 and bans.banned("10.0.3.231") and not bans.banned("10.0.0.0")


def test_bot_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"routes": [{"respond": {}}], "bots": {"deny_agents": ["("], "ban": {"window": "1m"}}})
    assert any(p.startswith("bots.deny_agents: '(' does not compile") for p in info.value.problems)
    assert any(p.startswith("bots.ban.after: a ban needs a count") for p in info.value.problems)
