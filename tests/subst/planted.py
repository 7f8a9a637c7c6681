"""Rules that are wrong on purpose (shared by the verifier tests)."""
from __future__ import annotations

PLANTED: dict[str, tuple[str, str]] = {
    "matmul_swapped_operands": ("""
graph lhs(%x: f32[5,5], %y: f32[5,5]) {
  %0: f32[5,5] = matmul(%x, %y)
  return %0 as "o0"
}""", """
graph rhs(%x: f32[5,5], %y: f32[5,5]) {
  %0: f32[5,5] = matmul(%y, %x)
  return %0 as "o0"
}"""),
    "transpose_of_product_not_reversed": ("""
graph lhs(%x: f32[5,5], %y: f32[5,5]) {
  %0: f32[5,5] = matmul(%x, %y)
  %1: f32[5,5] = transpose(%0) {perm=(1, 0)}
  return %1 as "o0"
}""", """
graph rhs(%x: f32[5,5], %y: f32[5,5]) {
  %0: f32[5,5] = transpose(%x) {perm=(1, 0)}
  %1: f32[5,5] = transpose(%y) {perm=(1, 0)}
  %2: f32[5,5] = matmul(%0, %1)
  return %2 as "o0"
}"""),
    "concat_wrong_axis": ("""
graph lhs(%x: f32[5,5], %y: f32[5,5]) {
  %0: f32[10,5] = concat(%x, %y) {axis=0}
  %1: f32[5,10] = transpose(%0) {perm=(1, 0)}
  return %1 as "o0"
}""", """
graph rhs(%x: f32[5,5], %y: f32[5,5]) {
  %0: f32[5,10] = concat(%x, %y) {axis=1}
  return %0 as "o0"
}"""),
    "relu_through_sub": ("""
graph lhs(%x: f32[5,7], %y: f32[5,7]) {
  %0: f32[5,7] = sub(%x, %y)
  %1: f32[5,7] = relu(%0)
  return %1 as "o0"
}""", """
graph rhs(%x: f32[5,7], %y: f32[5,7]) {
  %0: f32[5,7] = relu(%x)
  %1: f32[5,7] = relu(%y)
  %2: f32[5,7] = sub(%0, %1)
  return %2 as "o0"
}"""),
    "relu_through_add": ("""
graph lhs(%x: f32[5,7], %y: f32[5,7]) {
  %0: f32[5,7] = add(%x, %y)
  %1: f32[5,7] = relu(%0)
  return %1 as "o0"
}""", """
graph rhs(%x: f32[5,7], %y: f32[5,7]) {
  %0: f32[5,7] = relu(%x)
  %1: f32[5,7] = relu(%y)
  %2: f32[5,7] = add(%0, %1)
  return %2 as "o0"
}"""),
    "relu_neg_commute": ("""
graph lhs(%x: f32[5,7]) {
  %0: f32[5,7] = neg(%x)
  %1: f32[5,7] = relu(%0)
  return %1 as "o0"
}""", """
graph rhs(%x: f32[5,7]) {
  %0: f32[5,7] = relu(%x)
  %1: f32[5,7] = neg(%0)
  return %1 as "o0"
}"""),
    "scalar_mul_half_distributed": ("""
graph lhs(%x: f32[5,7], %y: f32[5,7], %s: f32[]) {
  %0: f32[5,7] = add(%x, %y)
  %1: f32[5,7] = mul(%0, %s)
  return %1 as "o0"
}""", """
graph rhs(%x: f32[5,7], %y: f32[5,7], %s: f32[]) {
  %0: f32[5,7] = mul(%x, %s)
  %1: f32[5,7] = add(%0, %y)
  return %1 as "o0"
}"""),
    "exp_of_sum": ("""
graph lhs(%x: f32[5,7], %y: f32[5,7]) {
  %0: f32[5,7] = add(%x, %y)
  %1: f32[5,7] = exp(%0)
  return %1 as "o0"
}""", """
graph rhs(%x: f32[5,7], %y: f32[5,7]) {
  %0: f32[5,7] = exp(%x)
  %1: f32[5,7] = exp(%y)
  %2: f32[5,7] = add(%0, %1)
  return %2 as "o0"
}"""),
    "softmax_wrong_axis": ("""
graph lhs(%x: f32[5,5]) {
  %0: f32[5,5] = softmax(%x) {axis=1}
  return %0 as "o0"
}""", """
graph rhs(%x: f32[5,5]) {
  %0: f32[5,5] = softmax(%x) {axis=0}
  return %0 as "o0"
}"""),
    "matmul_assoc_reordered": ("""
graph lhs(%x: f32[5,5], %y: f32[5,5], %z: f32[5,5]) {
  %0: f32[5,5] = matmul(%x, %y)
  %1: f32[5,5] = matmul(%0, %z)
  return %1 as "o0"
}""", """
graph rhs(%x: f32[5,5], %y: f32[5,5], %z: f32[5,5]) {
  %0: f32[5,5] = matmul(%z, %y)
  %1: f32[5,5] = matmul(%x, %0)
  return %1 as "o0"
}"""),
    "split_outputs_swapped": ("""
graph lhs(%x: f32[5,7], %y: f32[5,7]) {
  %0: f32[10,7] = concat(%x, %y) {axis=0}
  %1: f32[5,7], %2: f32[5,7] = split(%0) {axis=0, sizes=(5, 5)}
  return %1 as "o0", %2 as "o1"
}""", """
graph rhs(%x: f32[5,7], %y: f32[5,7]) {
  %0: f32[5,7] = identity(%y)
  %1: f32[5,7] = identity(%x)
  return %0 as "o0", %1 as "o1"
}"""),
    "gelu_additive": ("""
graph lhs(%x: f32[5,7], %y: f32[5,7]) {
  %0: f32[5,7] = gelu(%x) {approximate="none"}
  %1: f32[5,7] = gelu(%y) {approximate="none"}
  %2: f32[5,7] = add(%0, %1)
  return %2 as "o0"
}""", """
graph rhs(%x: f32[5,7], %y: f32[5,7]) {
  %0: f32[5,7] = add(%x, %y)
  %1: f32[5,7] = gelu(%0) {approximate="none"}
  return %1 as "o0"
}"""),
    "reduce_sum_of_product": ("""
graph lhs(%x: f32[5,7], %y: f32[5,7]) {
  %0: f32[5,7] = mul(%x, %y)
  %1: f32[5,1] = reduce_sum(%0) {axes=(1,), keepdims=true}
  return %1 as "o0"
}""", """
graph rhs(%x: f32[5,7], %y: f32[5,7]) {
  %0: f32[5,1] = reduce_sum(%x) {axes=(1,), keepdims=true}
  %1: f32[5,1] = reduce_sum(%y) {axes=(1,), keepdims=true}
  %2: f32[5,1] = mul(%0, %1)
  return %2 as "o0"
}"""),
    "transpose_3d_not_inverse": ("""
graph lhs(%x: f32[5,5,5]) {
  %0: f32[5,5,5] = transpose(%x) {perm=(1, 2, 0)}
  %1: f32[5,5,5] = transpose(%0) {perm=(1, 2, 0)}
  return %1 as "o0"
}""", """
graph rhs(%x: f32[5,5,5]) {
  %0: f32[5,5,5] = identity(%x)
  return %0 as "o0"
}"""),
}


def rule_text(name: str) -> str:
    lhs, rhs = PLANTED[name]
    return f"rule planted-{name}\nlhs:{lhs}\nrhs:{rhs}\nend\n"
