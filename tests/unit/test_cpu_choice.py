"""Choosing the CPU to bind to (server.cpu_affinity), without binding anything."""

from __future__ import annotations

import pytest

from simpleproxy.affinity import Binding, choose, describe_cpus, mask_cpus
from simpleproxy.config import config_from_dict, parse_config
from simpleproxy.errors import ConfigError


def test_auto_takes_the_last_allowed_cpu_and_leaves_a_lone_one_alone() -> None:
    assert choose("auto", [0, 1]).cpu == 1
    assert choose("auto", [0, 2, 5, 7]).cpu == 7  # a container's or taskset's CPU set, not 0..n-1
    assert choose("auto", [3]) == Binding(None, "only one CPU to run on")


def test_a_number_binds_to_that_cpu_if_the_process_may_use_it() -> None:
    assert choose(0, [0, 1]).cpu == 0
    assert choose(2, [2]).cpu is None  # already there alone
    with pytest.raises(ConfigError, match=r"server.cpu_affinity: CPU 4 is not one this process may run on \(0-3\)"):
        choose(4, [0, 1, 2, 3])


def test_none_never_binds() -> None:
    assert choose("none", [0, 1]).cpu is None


def test_cpu_lists_and_windows_masks() -> None:
    assert describe_cpus([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert describe_cpus([3]) == "3"
    assert mask_cpus(0b1011) == [0, 1, 3]
    assert mask_cpus(1 << 63) == [63]


@pytest.mark.parametrize(("value", "read"), [("auto", "auto"), ("none", "none"), (False, "none"), (0, 0), (3, 3)])
def test_the_setting_is_read(value: object, read: object) -> None:
    config = config_from_dict({"server": {"cpu_affinity": value}, "routes": [{"respond": {}}]})
    assert config.server.cpu_affinity == read


def test_yaml_off_means_none_and_the_default_is_auto() -> None:
    assert parse_config("server: {cpu_affinity: off}\nroutes: [{respond: {}}]\n").server.cpu_affinity == "none"
    assert config_from_dict({"routes": [{"respond": {}}]}).server.cpu_affinity == "auto"


@pytest.mark.parametrize("value", [-1, "1", "all", True, 1.5, [0, 1]])
def test_a_bad_setting_names_the_key(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"server": {"cpu_affinity": value}, "routes": [{"respond": {}}]})
    assert info.value.problems[0].startswith("server.cpu_affinity: expected auto, none or a CPU number")
