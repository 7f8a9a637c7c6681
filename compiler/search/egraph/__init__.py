"""Equality saturation search (``--search egraph``): the graph and the rules go into an egglog
e-graph, which is saturated under a node and time budget; the cheapest graph is extracted by the
same cost model (greedy, or an integer program as Tensat does)."""
