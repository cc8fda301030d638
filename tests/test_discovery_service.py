"""``Discovery`` alone, with no data plane: every decision about a pool's membership (a first
lookup, a watched file's change, an operator's add or remove, a reload) is handed on as the
pool's whole list of backends, which is all a data plane, or a worker process, needs."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import replace

import pytest

from lbctl.config.model import Discovery as DiscoveryConfig
from lbctl.discovery.membership import MembershipError
from lbctl.discovery.service import Discovery

from tests.support import backend_config, config


def write_list(path, entries) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(entries))
    os.replace(tmp, path)


def file_config(path, static=()):
    cfg = config({"api": list(static), "web": [backend_config("http://127.0.0.1:9100", "w")]})
    pools = dict(cfg.pools)
    pools["api"] = replace(pools["api"], discovery=DiscoveryConfig(file=str(path),
                                                                   interval=0.05))
    return replace(cfg, pools=cfg.freeze(pools))


class Heard:
    """What a data plane would be handed: (pool, [(name, source), ...]) per decision."""

    def __init__(self) -> None:
        self.lists: list[tuple[str, list[tuple[str, str]]]] = []
        self.changed = asyncio.Event()

    def __call__(self, pool, members) -> None:
        self.lists.append((pool, [(b.name, b.source) for b in members]))
        self.changed.set()

    async def next(self):
        """The list handed on since ``changed`` was last cleared."""
        await asyncio.wait_for(self.changed.wait(), 5.0)
        return self.lists[-1]


async def test_each_decision_is_handed_on_as_the_pools_whole_list(tmp_path):
    path = tmp_path / "api.json"
    write_list(path, [{"url": "http://127.0.0.1:9001", "name": "d1"}])
    static = backend_config("http://127.0.0.1:9000", "s")
    heard = Heard()
    discovery = Discovery(file_config(path, [static]), heard)
    try:
        await discovery.start(file_config(path, [static]))
        # The first lookup, before anything listens.
        assert heard.lists == [("api", [("s", "static"), ("d1", "file")])]
        assert discovery.status("api").state == "ok" and discovery.status("web") is None

        heard.changed.clear()
        write_list(path, [{"url": "http://127.0.0.1:9001", "name": "d1"},
                          {"url": "http://127.0.0.1:9002", "name": "d2"}])
        assert await heard.next() == ("api", [("s", "static"), ("d1", "file"), ("d2", "file")])

        discovery.add("web", replace(backend_config("http://127.0.0.1:9101", "w2"),
                                     source="admin"))
        assert heard.lists[-1] == ("web", [("w", "static"), ("w2", "admin")])
        removed = discovery.remove("api", "s")
        assert removed.name == "s"
        assert heard.lists[-1] == ("api", [("d1", "file"), ("d2", "file")])
        with pytest.raises(MembershipError) as info:
            discovery.remove("api", "d1")           # the file owns it
        assert info.value.status == 409
        with pytest.raises(MembershipError) as info:
            discovery.add("nope", static)
        assert info.value.status == 404

        # A reload: the file's static backend is back; the runtime is built from the result.
        members = discovery.reconfigure(file_config(path, [static]))
        assert [b.name for b in members["api"]] == ["s", "d1", "d2"]
        assert [b.name for b in members["web"]] == ["w", "w2"]      # added at run time: kept
    finally:
        await discovery.stop()


async def test_a_pool_without_discovery_needs_no_watcher():
    heard = Heard()
    cfg = config({"web": [backend_config("http://127.0.0.1:9100", "w")]})
    discovery = Discovery(cfg, heard)
    await discovery.start(cfg)
    assert heard.lists == [] and discovery.watchers == {}
    await discovery.stop()
