"""Explain a balancing decision: which candidates the algorithm offered, their load, who won, why.

Only used when a pool has ``explain = true`` or an admin-token holder asks with
``X-LB-Explain: 1`` (and ``X-LB-Admin-Token``); the normal request path never comes here.
The selection itself is the pool's own ``select``, given a ``trace`` that hears the
candidates the algorithm offers (both of a power-of-two pair, which costs no extra random
draw), so an explained request is balanced exactly as any other.
"""

from __future__ import annotations

WHY = {
    "round_robin": "next in rotation",
    "weighted": "smooth weighted round-robin: highest current weight",
    "random": "random draw, weight-proportional",
    "least_conn": "fewest requests in flight relative to weight",
    "p2c": "fewer requests in flight of two random choices",
    "ewma": "lower EWMA latency x (in-flight + 1) of two random choices",
    "consistent_hash": "owner of the request key on the hash ring",
}


def select(pool, key, exclude) -> tuple[object, str]:
    """The pool's choice for one attempt and a one-line explanation of it."""
    offered: list = []
    chosen = pool.select(key, exclude=exclude, trace=offered.append)
    return chosen, describe(pool, offered, chosen, exclude)


def describe(pool, offered, chosen, exclude) -> str:
    algorithm = pool.algorithm
    now = pool.clock()
    score = getattr(algorithm, "score", None)
    parts = []
    for b in offered[:8]:
        fields = [f"inflight={b.inflight}"]
        if algorithm.reads_latency:
            fields.append(f"ewma={b.ewma_cost(now, pool.ewma_decay) * 1000:.1f}ms")
        if score is not None:
            fields.append(f"score={score(b):.4g}")
        if b in exclude:
            fields.append("skipped=already-tried")
        elif not b.eligible and pool.mode != "panic":
            fields.append("skipped=not-eligible")
        parts.append(f"{b.name}({','.join(fields)})")
    why = WHY.get(algorithm.name, algorithm.name)
    if chosen is None:
        why = "no eligible candidate left"
    elif offered and offered[0] is not chosen and chosen in offered:
        why += "; earlier candidates were skipped"
    if pool.mode != "normal":
        why += f"; pool in {pool.mode} mode"
    return (f"algorithm={algorithm.name}; candidates={' '.join(parts) or '-'}; "
            f"chosen={chosen.name if chosen is not None else '-'}; why={why}")
