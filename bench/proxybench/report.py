"""From runs to medians, ratios and targets; rendered as a text table or as Markdown.

Pure functions of the results document (what ``bench/results/proxy-*.json`` holds), so that
``--report FILE`` renders an earlier run again without measuring anything.
"""

from __future__ import annotations

import statistics

from .targets import LABELS

WORKLOAD_TITLES = {"small": "small, keep-alive", "64k": "64 KiB, keep-alive",
                   "close": "small, `Connection: close`"}

# The data-plane performance targets: lbctl / nginx req/s per workload, and the rest.
RPS_VS_NGINX = {"small": 0.6, "64k": 0.8, "close": 0.6}
RPS_VS_ENVOY = 1.2
P99_VS_NGINX = 1.5
RSS_MAX_MIB = 40
IDLE_KIB_MAX = 4.0
IDLE_GIVEN_BACK_MIN = 0.9
P999_IDLE_MAX = 2.0


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _ratio(a, b):
    return a / b if a is not None and b else None


def summarize(runs: list[dict], order: list[str]) -> dict:
    """Medians per workload and target, with ratios to nginx and to Envoy."""
    summary: dict = {}
    for workload in dict.fromkeys(r["workload"] for r in runs):
        per = {}
        for name in order:
            rs = [r for r in runs if r["workload"] == workload and r["target"] == name]
            if not rs:
                continue
            per[name] = {
                "rps": _median(r["rps"] for r in rs),
                "p50_ms": _median(r["p50_ms"] for r in rs),
                "p99_ms": _median(r["p99_ms"] for r in rs),
                "p999_ms": _median(r.get("p999_ms") for r in rs),
                "errors": sum(r["socket_errors"] + r["non_2xx"] for r in rs),
                "proxy_cpu": _median(r["proxy_cpu"] for r in rs),
                "user_us": _median(r["user_us"] for r in rs),
                "sys_us": _median(r["sys_us"] for r in rs),
                "us_per_req": _median(r["us_per_req"] for r in rs),
                "conns_per_req": _median(r["conns_per_req"] for r in rs),
                "conns_per_req_run": _median(r.get("conns_per_req_run") for r in rs),
                "upstream_reqs_per_req": _median(r["upstream_reqs_per_req"] for r in rs),
                # best of the rounds: noise from other work only ever adds to these
                "best_rps": max(r["rps"] for r in rs),
                "best_us_per_req": min((r["us_per_req"] for r in rs
                                        if r["us_per_req"] is not None), default=None),
                "other_cpu": _median(r["other_cpu"] for r in rs),
                "other_cpu_max": max(r["other_cpu"] for r in rs),
                "runs": len(rs)}
        for ref in ("nginx", "envoy"):
            base = per.get(ref)
            for s in per.values():
                s[f"rps_x_{ref}"] = _ratio(s["rps"], base and base["rps"])
                s[f"us_x_{ref}"] = _ratio(s["us_per_req"], base and base["us_per_req"])
                s[f"p99_x_{ref}"] = _ratio(s["p99_ms"], base and base["p99_ms"])
        # p99 against nginx's in the same round, worst round: "in every round".
        for name, s in per.items():
            worst = None
            for r in (r for r in runs if r["workload"] == workload and r["target"] == name):
                ref = next((x for x in runs if x["workload"] == workload and
                            x["target"] == "nginx" and x["round"] == r["round"]), None)
                q = _ratio(r["p99_ms"], ref and ref["p99_ms"])
                if q is not None:
                    worst = q if worst is None else max(worst, q)
            s["p99_x_nginx_worst_round"] = worst
        summary[workload] = per
    return summary


def summarize_idle(rounds: list[dict], order: list[str]) -> dict:
    out = {}
    for name in order:
        rs = [r for r in rounds if r["target"] == name]
        if not rs:
            continue
        first = rs[0]
        out[name] = {
            "idle": first["idle"],
            # The first round is the fresh process; later rounds reuse what it kept.
            "kib_per_conn": first["kib_per_conn"], "given_back": first["given_back"],
            "kib_per_conn_rounds": [r["kib_per_conn"] for r in rs],
            "given_back_rounds": [r["given_back"] for r in rs],
            "still_open_after_load": min(r["still_open_after_load"] for r in rs),
            "p999_without_ms": _median(r["without"].get("p999_ms") for r in rs),
            "p999_with_ms": _median(r["with"].get("p999_ms") for r in rs),
            "p99_without_ms": _median(r["without"]["p99_ms"] for r in rs),
            "p99_with_ms": _median(r["with"]["p99_ms"] for r in rs),
            "rps_without": _median(r["without"]["rps"] for r in rs),
            "rps_with": _median(r["with"]["rps"] for r in rs),
            "p999_ratio_rounds": [r["p999_ratio"] for r in rs],
            "rounds": len(rs)}
        # The ratio of the medians shown, not a median of per-round ratios.
        out[name]["p999_ratio"] = _ratio(out[name]["p999_with_ms"], out[name]["p999_without_ms"])
    return out


def checks(doc: dict) -> list[dict]:
    out = []
    summary, rss, idle = doc["summary"], doc.get("rss_kib", {}), doc.get("idle", {})

    def add(target, what, value, limit, ok):
        out.append({"target": target, "what": what, "value": value, "limit": limit,
                    "ok": bool(ok) if value is not None else None})

    for name in doc["order"]:
        if doc["kinds"].get(name) != "lbctl":
            continue
        for workload, per in summary.items():
            s = per.get(name)
            if s is None:
                continue
            floor = RPS_VS_NGINX.get(workload)
            if floor is not None:
                v = s.get("rps_x_nginx")
                add(name, f"{workload} req/s vs nginx", v, f">= {floor}", v and v >= floor)
            v = s.get("rps_x_envoy")
            add(name, f"{workload} req/s vs Envoy", v, f">= {RPS_VS_ENVOY}",
                v and v >= RPS_VS_ENVOY)
            v = s.get("p99_x_nginx_worst_round")
            add(name, f"{workload} p99 vs nginx, worst round", v, f"<= {P99_VS_NGINX}",
                v and v <= P99_VS_NGINX)
        if name in rss:
            mib = rss[name]["peak_kib"] / 1024
            add(name, "peak RSS MiB per process", mib, f"<= {RSS_MAX_MIB}", mib <= RSS_MAX_MIB)
        if name in idle:
            i = idle[name]
            v = i["kib_per_conn"]
            add(name, "KiB per idle connection", v, f"<= {IDLE_KIB_MAX}",
                v is not None and v <= IDLE_KIB_MAX)
            v = i["given_back"]
            add(name, "idle memory given back", v, f">= {IDLE_GIVEN_BACK_MIN}",
                v is not None and v >= IDLE_GIVEN_BACK_MIN)
            v = i["p999_ratio"]
            add(name, f"p99.9 with {i['idle']} idle vs without", v, f"<= {P999_IDLE_MAX}",
                v is not None and v <= P999_IDLE_MAX)
    return out


def paired(runs: list[dict], kinds: dict, ref: str = "lbctl") -> list[dict]:
    """Each other lbctl (--tree, --variant) against ``ref``, round by round: the ratio of
    their CPU per request measured in the same round (paired, so a round's noise falls on
    both). Below 1: ``ref`` spends less CPU per request."""
    out = []
    others = [n for n, k in kinds.items() if k == "lbctl" and n != ref]
    for other in others:
        for workload in dict.fromkeys(r["workload"] for r in runs):
            ratios = []
            for r in runs:
                if r["workload"] != workload or r["target"] != ref:
                    continue
                o = next((x for x in runs if x["workload"] == workload and
                          x["target"] == other and x["round"] == r["round"]), None)
                q = _ratio(r["us_per_req"], o and o["us_per_req"])
                if q is not None:
                    ratios.append(q)
            if ratios:
                out.append({"ref": ref, "other": other, "workload": workload,
                            "us_ratio": statistics.median(ratios), "rounds": ratios})
    return out


# ---- text ----------------------------------------------------------------------------------

def _f(value, fmt: str, width: int) -> str:
    return f"{value:{width}{fmt}}" if value is not None else f"{'-':>{width}}"


def label(name: str) -> str:
    return LABELS.get(name, name)


def render_text(doc: dict) -> str:
    p = doc["params"]
    out = [f"medians of {p['rounds']} round(s), {p['duration']:g} s each, wrk -t{p['threads']} "
           f"-c{p['connections']}; {p['pinning']}; {p['workers']} worker(s) per proxy",
           "CPU: the proxy's CPU use (cores); user/sys/us: its CPU time per request (us); "
           "conn/req: upstream connections opened per request\n"
           "(the backends' counts, after the ramp-up and before the end of the run; for direct: "
           "wrk's own)", ""]
    head = (f"{'workload':8} {'target':9} {'req/s':>8} {'xnginx':>6} {'xEnvoy':>6} "
            f"{'p50 ms':>7} {'p99 ms':>7} {'xnginx':>6} {'p99.9':>7} {'CPU':>5} {'user':>6} "
            f"{'sys':>6} {'us/req':>6} {'xnginx':>6} {'xEnvoy':>6} {'conn/req':>8} {'err':>4}")
    out.append(head)
    for workload, per in doc["summary"].items():
        for name, s in per.items():
            out.append(
                f"{workload:8} {label(name)[:9]:9} {s['rps']:8.0f} "
                f"{_f(s['rps_x_nginx'], '.2f', 6)} {_f(s['rps_x_envoy'], '.2f', 6)} {s['p50_ms']:7.2f} {s['p99_ms']:7.2f} "
                f"{_f(s['p99_x_nginx'], '.2f', 6)} {_f(s['p999_ms'], '.2f', 7)} "
                f"{_f(s['proxy_cpu'], '.2f', 5)} {_f(s['user_us'], '.1f', 6)} "
                f"{_f(s['sys_us'], '.1f', 6)} {_f(s['us_per_req'], '.1f', 6)} "
                f"{_f(s['us_x_nginx'], '.2f', 6)} {_f(s['us_x_envoy'], '.2f', 6)} "
                f"{_f(s['conns_per_req'], '.4f', 8)} {s['errors']:4d}")
        out.append("")
    if doc.get("rss_kib"):
        out.append("peak RSS (VmHWM of the largest process; all processes when more than one): "
                   + ", ".join(_rss_text(name, r) for name, r in doc["rss_kib"].items()))
    if doc.get("idle"):
        out.append("")
        out.append("idle keep-alive connections (first round: KiB each, share given back "
                   "after close; medians: p99.9 without and with them open):")
        for name, i in doc["idle"].items():
            out.append(
                f"  {label(name):9} {i['idle']:5d} idle: {_f(i['kib_per_conn'], '.2f', 6)} KiB "
                f"each, {_pct(i['given_back'])} given back "
                f"(rounds: {', '.join(_f(k, '.2f', 1) for k in i['kib_per_conn_rounds'])} KiB); "
                f"p99.9 {_f(i['p999_without_ms'], '.2f', 1)} -> "
                f"{_f(i['p999_with_ms'], '.2f', 1)} ms "
                f"(x{_f(i['p999_ratio'], '.2f', 1)}); still open after the load: "
                f"{i['still_open_after_load']}")
    for key, title in (("runs", "paired by round"), ("together", "measured together")):
        pairs = paired(doc.get(key) or [], doc.get("kinds", {}))
        if pairs:
            out.append("")
            out.append(f"CPU per request, {title} (below 1: lbctl spends less than the other):")
            for c in pairs:
                out.append(f"  {c['workload']:6} lbctl / {label(c['other'])}: "
                           f"{c['us_ratio']:.3f} (rounds: "
                           f"{', '.join(f'{q:.3f}' for q in c['rounds'])})")
    if doc.get("versions"):
        out.append("")
        out.append(versions_text(doc["versions"]))
    noise = doc.get("noise")
    if noise:
        out.append(noise_text(noise))
    if doc.get("notes"):
        out.append("")
        out.extend(f"note: {n}" for n in doc["notes"])
    if doc.get("checks"):
        out.append("")
        out.append("targets (data-plane performance):")
        for c in doc["checks"]:
            mark = {True: "ok  ", False: "MISS", None: "n/a "}[c["ok"]]
            out.append(f"  {mark} {label(c['target']):9} {c['what']:34} "
                       f"{_f(c['value'], '.2f', 1)} (want {c['limit']})")
    return "\n".join(out)


def _rss_text(name: str, r: dict) -> str:
    text = f"{label(name)} {r['peak_kib'] / 1024:.1f} MiB"
    if r["processes"] > 1:
        text += f" ({r['processes']} processes: {r['total_kib'] / 1024:.1f} MiB)"
    return text


def _pct(v) -> str:
    return f"{100 * v:.0f}%" if v is not None else "-"


def versions_text(v: dict) -> str:
    nginx = (v.get("nginx") or "").rpartition("/")[2] or None
    parts = [f"{label(name)} {ver}" for name, ver in (("nginx", nginx), *(
        (n, v.get(n)) for n in ("haproxy", "envoy", "caddy", "traefik"))) if ver]
    parts.append(f"Python {v.get('python')} (uvloop {v.get('uvloop')}, httptools "
                 f"{v.get('httptools')})")
    return f"{', '.join(parts)}; lbctl {v.get('lbctl_commit')}" + \
        (" (modified)" if v.get("lbctl_dirty") else "") + f"; {v.get('cpus')} x {v.get('cpu')}"


def noise_text(noise: dict) -> str:
    return (f"other load (CPU used by processes this harness did not start, in cores): median "
            f"{noise['median']:.2f}, max {noise['max']:.2f}; {noise['noisy']} of {noise['runs']} "
            f"runs above {noise['threshold']}")


# ---- Markdown ------------------------------------------------------------------------------

def _num(v, digits: int = 0) -> str:
    return f"{v:,.{digits}f}" if v is not None else "-"


def render_markdown(doc: dict) -> str:
    order = [n for n in doc["order"]]
    proxies = [n for n in order if n != "direct"]
    ours = [n for n in order if doc["kinds"].get(n) == "lbctl"]
    summary = doc["summary"]
    p = doc["params"]
    out = [f"Medians of {p['rounds']} interleaved round(s) of {p['duration']:g} s, "
           f"`wrk -t{p['threads']} -c{p['connections']}`, {p['workers']} worker(s) per proxy; "
           f"{p['pinning']}.", ""]
    versions = doc.get("versions") or {}
    if versions:
        out += [versions_text(versions) + ".", ""]
    if doc.get("noise"):
        text = noise_text(doc["noise"])
        out += [text[0].upper() + text[1:] + ".", ""]

    def table(title: str, cols: list[str], cell, extra=()):
        out.append("| " + " | ".join([title, *(label(c) for c in cols),
                                      *(e[0] for e in extra)]) + " |")
        out.append("|" + "---|" * (1 + len(cols) + len(extra)))
        for workload, per in summary.items():
            row = [WORKLOAD_TITLES.get(workload, workload)]
            row += [cell(per[c]) if c in per else "-" for c in cols]
            row += [e[1](per) for e in extra]
            out.append("| " + " | ".join(row) + " |")
        out.append("")

    def ratios(metric: str) -> list:
        """Columns of each of ours against nginx and Envoy, e.g. ``rps_x_nginx``."""
        return [(f"{label(o)} / {label(ref)}", lambda per, o=o, key=f"{metric}_x_{ref}": _num(
            per.get(o, {}).get(key), 2)) for o in ours for ref in ("nginx", "envoy")]

    table("req/s", order, lambda s: _num(s["rps"]), ratios("rps"))
    table("CPU per request, us (user + sys)", proxies,
          lambda s: f"{_num(s['us_per_req'], 1)} ({_num(s['user_us'], 1)} + "
                    f"{_num(s['sys_us'], 1)})", ratios("us"))
    table("p50 / p99, ms", order, lambda s: f"{s['p50_ms']:.2f} / {s['p99_ms']:.2f}")
    table("upstream connections per request", proxies,
          lambda s: f"{s['conns_per_req']:.4f}" if s["conns_per_req"] is not None else "-")
    if doc.get("rss_kib"):
        out.append("| peak RSS | " + " | ".join(label(n) for n in doc["rss_kib"]) + " |")
        out.append("|" + "---|" * (1 + len(doc["rss_kib"])))
        out.append("| MiB (largest process) | " + " | ".join(
            f"{r['peak_kib'] / 1024:.1f}" for r in doc["rss_kib"].values()) + " |")
        out.append("")
    if doc.get("idle"):
        k = max(i["idle"] for i in doc["idle"].values())
        out.append(f"| idle keep-alive connections | KiB per connection | given back after "
                   f"close | p99.9 without | p99.9 with {k:,} open | ratio |")
        out.append("|---|---|---|---|---|---|")
        for name, i in doc["idle"].items():
            out.append(f"| {label(name)} | {_num(i['kib_per_conn'], 1)} | {_pct(i['given_back'])}"
                       f" | {_num(i['p999_without_ms'], 1)} ms | {_num(i['p999_with_ms'], 1)} ms"
                       f" | {_num(i['p999_ratio'], 2)} |")
        out.append("")
    return "\n".join(out)
