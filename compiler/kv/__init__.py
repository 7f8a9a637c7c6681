"""KV-cache rewriting: derive a decoder-with-past ("decode") graph from a decoder without a cache,
prove the derivation legal, write it for generation loops and generate with it.

* ``seqaxis``: which values carry the token stream and where an op mixes positions (legality).
* ``probe``: numeric facts about the graph's position and mask computations, measured at several
  sequence lengths (window sizes, causality, position tables).
* ``derive``: the decode and prefill graphs and their ``CacheSpec``.
* ``spec``, ``generate``, ``folder``: the contract, greedy generation, the written folder.
"""
