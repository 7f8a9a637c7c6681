"""graphopt.codegen: lowering of optimized graphs to generated Triton kernels (see docs/codegen.md).

``graphopt.codegen.runtime.compile_graph(graph, target)`` is the entry point; ``triton.lower``
partitions a graph; ``triton.kernels`` holds one source writer per kernel family."""
