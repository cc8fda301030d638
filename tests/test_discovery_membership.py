"""Membership decisions: static, added and discovered backends merged under stable names, and
what a reload does to operators' changes. Pure: no sockets, no pools."""

from __future__ import annotations

import pytest

from lbctl.config.model import Discovery, PoolConfig
from lbctl.discovery.membership import MembershipError, PoolMembers

from tests.support import backend_config


def b(name, port=9001, source="static", weight=1.0):
    cfg = backend_config(f"http://127.0.0.1:{port}", name, weight)
    return cfg.__class__(**{**cfg.__dict__, "source": source})


def names(members):
    return [(m.name, m.source) for m in members.members()]


def test_static_then_added_then_discovered():
    m = PoolMembers("api", (b("s1"), b("s2")))
    m.discovered = (b("d1", source="dns"), b("s1", 9009, source="dns"))
    m.add(b("a1", source="admin"))
    assert names(m) == [("s1", "static"), ("s2", "static"), ("a1", "admin"), ("d1", "dns")]
    # A discovered name already taken is shadowed, never merged into the static one.
    assert m.shadowed() == ["s1"]
    assert m.members()[0].port == 9001


def test_add_refuses_a_taken_name_whatever_its_source():
    m = PoolMembers("api", (b("s1"),))
    m.discovered = (b("d1", source="dns"),)
    for taken in ("s1", "d1"):
        with pytest.raises(MembershipError) as info:
            m.add(b(taken, source="admin"))
        assert info.value.status == 409 and taken in str(info.value)


def test_remove_static_admin_and_discovered():
    m = PoolMembers("api", (b("s1"), b("s2")))
    m.add(b("a1", source="admin"))
    m.discovered = (b("d1", source="file"),)
    assert m.remove("a1").source == "admin"
    assert m.remove("s1").source == "static"
    assert names(m) == [("s2", "static"), ("d1", "file")]
    with pytest.raises(MembershipError) as info:
        m.remove("d1")
    assert info.value.status == 409 and "file discovery" in str(info.value)
    with pytest.raises(MembershipError) as info:
        m.remove("nope")
    assert info.value.status == 404


def test_a_removed_static_name_can_be_added_again_with_another_address():
    m = PoolMembers("api", (b("s1"),))
    m.remove("s1")
    m.add(b("s1", 9002, source="admin"))
    assert [(x.name, x.port, x.source) for x in m.members()] == [("s1", 9002, "admin")]


def pool(*backends, discovery=None):
    return PoolConfig(name="api", backends=tuple(backends), discovery=discovery)


def test_reload_keeps_additions_and_restores_removed_static_backends():
    m = PoolMembers("api", (b("s1"), b("s2")))
    m.add(b("a1", source="admin"))
    m.add(b("a2", source="admin"))
    m.remove("s2")
    notes = m.reconfigure(pool(b("s1"), b("s2"), b("a2", 9005)))
    assert names(m) == [("s1", "static"), ("s2", "static"), ("a2", "static"), ("a1", "admin")]
    assert m.members()[2].port == 9005          # the file's a2 took over the added one
    assert notes == [
        "pool api: backend s2 removed at run time is back: the config file lists it",
        "pool api: backend a2 added at run time is now the config file's",
        "pool api: keeps backend a1 added at run time; a restart forgets it unless the "
        "config file lists it",
    ]


def test_reload_without_discovery_empties_the_discovered_part():
    m = PoolMembers("api", (b("s1"),))
    m.discovered = (b("d1", source="dns"),)
    assert m.reconfigure(pool(b("s1"), discovery=Discovery(dns=None, file="x"))) == []
    assert names(m) == [("s1", "static"), ("d1", "dns")]     # still discovered: kept
    notes = m.reconfigure(pool(b("s1")))
    assert names(m) == [("s1", "static")]
    assert notes == ["pool api: no [discovery] any more; 1 discovered backend(s) leave"]
