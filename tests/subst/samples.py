"""True rules in the rule-file text form, shared by the rule-file, verifier, CLI and engine tests."""
from __future__ import annotations

RELU_TWICE = """rule t-relu
lhs:
graph lhs(%x: f32[5,7]) {
  %0: f32[5,7] = relu(%x)
  %1: f32[5,7] = relu(%0)
  return %1 as "o0"
}
rhs:
graph rhs(%x: f32[5,7]) {
  %0: f32[5,7] = relu(%x)
  return %0 as "o0"
}
end
"""

MERGE_MATMULS = """rule t-merge
lhs:
graph lhs(%x: f32[5,7], %y: f32[7,11], %z: f32[7,11]) {
  %0: f32[5,11] = matmul(%x, %y)
  %1: f32[5,11] = matmul(%x, %z)
  return %0 as "o0", %1 as "o1"
}
rhs:
graph rhs(%x: f32[5,7], %y: f32[7,11], %z: f32[7,11]) {
  %0: f32[7,22] = concat(%y, %z) {axis=1}
  %1: f32[5,22] = matmul(%x, %0)
  %2: f32[5,11], %3: f32[5,11] = split(%1) {axis=1, sizes=(11, 11)}
  return %2 as "o0", %3 as "o1"
}
end
"""
