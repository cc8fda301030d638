"""Discovery: which backends a pool has when they come and go at run time.

This package *decides* membership; it never touches a live pool, and never imports the data
plane. What it decides is a plain tuple of ``BackendConfig`` per pool. The serve root runs it
(``service.Discovery``) and hands each tuple to the data plane, which applies it
(``ProxyServer.set_members``, ``proxy/members.py``: survivors keep their live state,
newcomers ramp, the gone drain); with workers, a master can push the same tuple to every
worker. ``lbctl check`` resolves through it too, once, without watching.

    entries.py     one backend written as ``{"url", "name"?, "weight"?}``: the shape shared by
                   discovery files and the admin API, checked like the config file
    resolution.py  what one lookup said (found, authoritatively empty, or failed) and when to
                   look again: min(TTL, interval)
    dns.py         A/AAAA: every address of a name becomes a backend on one port
    srv.py         SRV: host, port and weight from each record; the lowest priority value are
                   the primaries, higher ones backups
    file.py        a JSON file, re-read when it changes (safe with an atomic rename)
    sources.py     ``[pools.X.discovery]`` -> the source above, and the nameserver to ask
    watch.py       one task per pool: resolve on schedule, keep the last good set on failure
                   (logged once, counted), empty the discovered part on an authoritative
                   empty answer, report each change
    membership.py  a pool's members: the config's backends, the discovered ones and those
                   operators added or removed at run time, merged under stable names
    service.py     ``Discovery``: the watchers and every pool's membership while lbctl runs;
                   each decision goes to ``on_members(pool, members)``

DNS is dnspython's asyncio resolver, imported only when a pool uses ``dns`` or ``srv``.
"""
