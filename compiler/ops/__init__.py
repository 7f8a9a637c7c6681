"""Op families. Importing this package registers every op (explicit list, one module a family)."""
from . import (source, opaque, elementwise, reduce, matmul, shape, nn, attention,  # noqa: F401
               rotary, quant, collectives)

ALL_FAMILIES = (source, opaque, elementwise, reduce, matmul, shape, nn, attention, rotary, quant,
                collectives)
