"""Random-graph equivalence at scale: random IR graphs from the op registry (tests/strategies.py)
through the full ``graphopt.optimize`` pipeline, the written ONNX bytes run in ONNX Runtime and
compared with the unoptimized graph (``equivalence.check_graph``). pytest runs a fixed 500-graph
slice (``test_slice.py``); ``python -m tests.random_graphs.run --n 10000 --seed S`` runs many and
prints a table; failures shrink to ``regressions/*.ir`` (checked by ``test_regressions.py``)."""
