import numpy as np
import pytest

from graphopt.ir.types import DType, OpaqueType, TensorType, dim_divide, dim_product


def test_dtype_conversions_round_trip() -> None:
    for d in (DType.f32, DType.f16, DType.i64, DType.bool, DType.u8):
        assert DType.from_numpy(d.to_numpy()) is d
        assert DType.from_onnx(d.to_onnx()) is d
        assert DType.from_torch(d.to_torch()) is d
    assert DType.from_onnx(16) is DType.bf16


def test_dtype_without_numpy_counterpart_raises() -> None:
    with pytest.raises(TypeError, match="bf16"):
        DType.bf16.to_numpy()


def test_tensor_type_checks_dims() -> None:
    t = TensorType(("batch", 4), DType.f32)
    assert str(t) == "f32[batch,4]"
    assert not t.is_static and t.rank == 2
    assert t.static_numel(default_sym=3) == 12
    with pytest.raises(ValueError):
        TensorType((-1, 2), DType.f32)
    with pytest.raises(ValueError):
        TensorType(("a b",), DType.f32)
    assert str(TensorType(None, DType.i64)) == "i64[?]"


def test_symbolic_dim_arithmetic() -> None:
    assert dim_product(["batch", "seq"]) == "batch*seq"
    assert dim_product([2, 3]) == 6
    p = dim_product(["seq", 12])
    assert dim_divide(p, 12) == "seq"
    assert dim_divide(p, "seq") == 12
    assert dim_divide("batch*seq", "seq") == "batch"
    assert dim_divide("batch", "seq") is None
    assert dim_divide(10, 3) is None


def test_opaque_type_prints() -> None:
    assert "seq" in str(OpaqueType(b"", "seq(f32)"))


def test_numpy_strings_map_to_string() -> None:
    assert DType.from_numpy(np.array(["a"]).dtype) is DType.string
