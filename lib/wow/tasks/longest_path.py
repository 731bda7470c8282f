"""The heaviest simple path between two nodes of a weighted undirected graph: the shortest-path task's worst
answer, against which its graded correctness is normalised (:mod:`wow.tasks.shortest_path`). Exact by a dynamic
programme over node subsets up to :data:`EXACT_MAX_NODES`, else a bounded search that reports whether it finished.
"""

from __future__ import annotations

import logging

from wow import WowError

log = logging.getLogger(__name__)

#: Most nodes (of the part of a graph that simple s-t paths can visit) for which :func:`longest_simple_path` is
#: exact: a dynamic programme over subsets, 2**(n-1) x (n-1) states (about 40 MB and a fraction of a second at 20
#: nodes). NLGraph's graphs have at most 20 nodes (its hard shortest-path graphs 11-20); the generated ones 5-8 by
#: default.
EXACT_MAX_NODES = 20


def longest_simple_path(
    adj: dict[int, dict[int, int]], s: int, t: int, budget: int = 200_000, max_exact_nodes: int = EXACT_MAX_NODES
) -> tuple[int, bool]:
    """Weight of the heaviest simple path from ``s`` to ``t`` of an undirected graph.

    Only the nodes some simple s-t path can visit count (:func:`path_nodes`: the blocks between ``s`` and ``t``).
    Up to ``max_exact_nodes`` of them the weight is exact (:func:`longest_path_dp`); past that, a depth-first
    search within ``budget`` steps, and when that runs out an upper bound replaces the weight.

    Args:
        adj: ``adj[u][v] = weight``, both directions.
        s: source node.
        t: target node (reachable from ``s``).
        budget: most steps of the search on graphs larger than ``max_exact_nodes``.
        max_exact_nodes: largest graph part solved by the dynamic programme.

    Returns:
        ``(weight, exact)``: with ``exact`` False the weight is an upper bound, the sum of the ``n - 1`` heaviest
        edges of that part (no simple path has more edges).
    """
    keep = path_nodes(adj, s, t)
    sub = {u: {v: w for v, w in adj[u].items() if v in keep} for u in keep}
    if len(sub) <= max_exact_nodes:
        return longest_path_dp(sub, s, t), True
    return _longest_path_search(sub, s, t, budget)


def path_nodes(adj: dict[int, dict[int, int]], s: int, t: int) -> set[int]:
    """The nodes that lie on at least one simple path from ``s`` to ``t``: the union of the biconnected blocks on
    the path from ``s`` to ``t`` in the graph's block tree (every other node hangs off a cut node that a simple
    path could not leave again)."""
    import networkx as nx

    graph = nx.Graph((u, v) for u in adj for v in adj[u])
    graph.add_nodes_from([s, t])
    blocks = [set(b) for b in nx.biconnected_components(graph)]
    tree = nx.Graph()
    for i, block in enumerate(blocks):
        tree.add_edges_from((("block", i), ("node", v)) for v in block)
    try:
        route = nx.shortest_path(tree, ("node", s), ("node", t))
    except (nx.NetworkXNoPath, nx.NodeNotFound):
        raise WowError(f"no path from node {s} to node {t}") from None
    return set().union(*(blocks[i] for kind, i in route if kind == "block"))


def longest_path_dp(adj: dict[int, dict[int, int]], s: int, t: int) -> int:
    """Exact weight of the heaviest simple s-t path by dynamic programming over subsets of the other nodes.

    ``best[mask, v]``: the heaviest path that starts at ``s``, visits exactly the nodes of ``mask`` and ends at
    ``v``. Masks are filled by their number of nodes, all masks of one size at once (numpy); a path never continues
    from ``t``. Time and memory grow as ``2 ** (n - 1) * (n - 1)``.

    Args:
        adj: ``adj[u][v] = weight``, both directions; ``t`` reachable from ``s``.
        s: source node.
        t: target node, not ``s``.

    Returns:
        the weight.
    """
    import numpy as np

    others = sorted(v for v in adj if v != s)
    m, index = len(others), {v: i for i, v in enumerate(others)}
    dtype = np.int64 if sum(w for u in adj for w in adj[u].values()) >= 2**30 else np.int32
    none = np.iinfo(dtype).min // 2
    best = np.full((1 << m, m), none, dtype=dtype)
    for v, w in adj[s].items():
        best[1 << index[v], index[v]] = w
    masks = np.arange(1 << m, dtype=np.int64)
    size = np.zeros(1 << m, dtype=np.int64)
    for b in range(m):
        size += (masks >> b) & 1
    by_size = np.argsort(size, kind="stable")
    edges = np.searchsorted(size[by_size], np.arange(m + 2))
    into = []  # per node: the nodes a path may come from (not s, not t) and the edge weights
    for v in others:
        src = [(index[u], w) for u, w in adj[v].items() if u not in (s, t)]
        into.append((np.array([i for i, _ in src], dtype=np.int64), np.array([w for _, w in src], dtype=dtype)))
    for k in range(1, m):
        layer = by_size[edges[k] : edges[k + 1]]
        for j, (src, w) in enumerate(into):
            if len(src) == 0:
                continue
            free = layer[((layer >> j) & 1) == 0]
            reach = (best[free][:, src] + w).max(axis=1)
            ok = reach > none // 2
            best[free[ok] | (1 << j), j] = reach[ok]
    return int(best[:, index[t]].max())


def _longest_path_search(adj: dict[int, dict[int, int]], s: int, t: int, budget: int) -> tuple[int, bool]:
    """Depth-first search for the heaviest simple s-t path within ``budget`` steps; past it an upper bound."""
    best = -1
    steps = 0
    visited = {s}
    stack = [(s, 0, iter(adj[s].items()))]
    while stack:
        node, dist, it = stack[-1]
        nxt = next(it, None)
        if nxt is None:
            stack.pop()
            visited.discard(node)
            continue
        v, w = nxt
        if v in visited:
            continue
        steps += 1
        if steps > budget:
            weights = sorted({(min(a, b), max(a, b)): w for a in adj for b, w in adj[a].items()}.values())
            log.warning("longest path from %d to %d: %d nodes, search budget spent; an upper bound", s, t, len(adj))
            return sum(weights[-(len(adj) - 1) :]), False
        if v == t:
            best = max(best, dist + w)
            continue
        visited.add(v)
        stack.append((v, dist + w, iter(adj[v].items())))
    return best, True
