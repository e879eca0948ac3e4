"""Explicit 8-lane float64 vectors for Numba kernels (issue 15: the outputs in the vector lanes).

Numba has no vector type, and LLVM chooses on its own which loop it vectorises: for a
multi-output forward pass ``R[i, :] = X[i, :] @ W.T`` it vectorised the feature loop (one
horizontal sum per row and output, or gathers), never the output loop (benchmarks/README.md
items 31 and 46). This module gives compiled code a value type ``f64x8`` whose LLVM type is
``<8 x double>`` and the few operations a GEMM-style micro-kernel needs, so a kernel can hold
one row's 8 outputs in one register and update it with one fused multiply-add per element of X:

    _zeros()                 the zero vector
    _load(a, i)              a[i:i + 8]           (a: 1-D C-contiguous float64 array; no bounds check)
    _store(a, i, v)          a[i:i + 8] = v
    _splat(x)                (x, x, ..., x)       x a float64 scalar (LLVM folds a load into vbroadcastsd)
    _fma(a, b, c)            a * b + c, lane-wise, one rounding (llvm.fma)
    _add(a, b)               a + b, lane-wise
    _sub(a, b)               a - b, lane-wise
    _load_upto(a, i, n)      (a[i], ..., a[i + n - 1], 0, ...) as float64 (a: float32 or float64; lanes from
                             n on are neither read nor faulted: llvm.masked.load)

Everything is inlined at the call site (intrinsics), so the vectors stay in registers. The lanes
are IEEE float64 operations with no fast-math flags: NaN and Inf propagate, and the order of
each lane's sum is the order of the calls (deterministic). Callers keep the indices in bounds.

Numba's cache keys on the *calling* kernel's source file: after changing this module, change or
touch ``kernels/cpu.py`` too (or use a fresh ``NUMBA_CACHE_DIR``), or cached kernels keep the old code.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

LANES = 8
_VECTOR = ir.VectorType(ir.DoubleType(), LANES)


class Float64x8(types.Type):
    """Numba type of 8 float64 lanes (LLVM ``<8 x double>``)."""

    def __init__(self) -> None:
        super().__init__(name="f64x8")


f64x8 = Float64x8()


@register_model(Float64x8)
class _Float64x8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VECTOR)


def _is_float64_array(array) -> bool:
    return isinstance(array, types.Array) and array.dtype == types.float64 and array.ndim == 1


def _is_float_array(array) -> bool:
    return isinstance(array, types.Array) and array.ndim == 1 and array.dtype in (types.float32, types.float64)


def _address(context, builder, array_type, array, index, vector=_VECTOR):
    """A pointer to ``vector`` (an LLVM vector type) at element ``index`` of the 1-D ``array``."""
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [index]), vector.as_pointer())


@intrinsic
def _zeros(typingctx):
    def codegen(context, builder, signature, args):
        return ir.Constant(_VECTOR, [0.0] * LANES)

    return f64x8(), codegen


@intrinsic
def _load(typingctx, array, index):
    if not _is_float64_array(array) or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.load(_address(context, builder, signature.args[0], args[0], args[1]), align=8)

    return f64x8(array, index), codegen


@intrinsic
def _store(typingctx, array, index, value):
    if not _is_float64_array(array) or not isinstance(index, types.Integer) or value != f64x8:
        return None

    def codegen(context, builder, signature, args):
        builder.store(args[2], _address(context, builder, signature.args[0], args[0], args[1]), align=8)
        return context.get_dummy_value()

    return types.void(array, index, value), codegen


@intrinsic
def _splat(typingctx, scalar):
    if scalar != types.float64:
        return None

    def codegen(context, builder, signature, args):
        one = builder.insert_element(ir.Constant(_VECTOR, ir.Undefined), args[0], ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))

    return f64x8(scalar), codegen


@intrinsic
def _fma(typingctx, a, b, c):
    if not (a == b == c == f64x8):
        return None

    def codegen(context, builder, signature, args):
        # llvmlite's declare_intrinsic does not name vector overloads: declare llvm.fma.v8f64 by hand.
        fnty = ir.FunctionType(_VECTOR, [_VECTOR] * 3)
        fma = cgutils.get_or_insert_function(builder.module, fnty, "llvm.fma.v8f64")
        return builder.call(fma, args)

    return f64x8(a, b, c), codegen


@intrinsic
def _add(typingctx, a, b):
    if not (a == b == f64x8):
        return None

    def codegen(context, builder, signature, args):
        return builder.fadd(args[0], args[1])

    return f64x8(a, b), codegen


__all__ = ["LANES", "Float64x8", "f64x8"]


@intrinsic
def _sub(typingctx, a, b):
    if not (a == b == f64x8):
        return None

    def codegen(context, builder, signature, args):
        return builder.fsub(args[0], args[1])

    return f64x8(a, b), codegen


@intrinsic
def _load_upto(typingctx, array, index, count):
    if not (_is_float_array(array) and isinstance(index, types.Integer) and isinstance(count, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        element = context.get_value_type(signature.args[0].dtype)
        vector = ir.VectorType(element, LANES)
        address = _address(context, builder, signature.args[0], args[0], args[1], vector)
        lane = ir.Constant(ir.VectorType(ir.IntType(64), LANES), list(range(LANES)))
        count_value = context.cast(builder, args[2], signature.args[2], types.int64)
        counts = builder.shuffle_vector(
            builder.insert_element(ir.Constant(ir.VectorType(ir.IntType(64), LANES), ir.Undefined), count_value,
                                   ir.Constant(ir.IntType(32), 0)),
            ir.Constant(ir.VectorType(ir.IntType(64), LANES), ir.Undefined),
            ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))
        mask = builder.icmp_signed("<", lane, counts)
        suffix = "v8f32" if element == ir.FloatType() else "v8f64"
        fnty = ir.FunctionType(vector, [vector.as_pointer(), ir.IntType(32), mask.type, vector])
        masked_load = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.load.{suffix}.p0")
        loaded = builder.call(masked_load, [address, ir.Constant(ir.IntType(32), 4), mask,
                                            ir.Constant(vector, [0.0] * LANES)])
        return loaded if element == ir.DoubleType() else builder.fpext(loaded, _VECTOR)

    return f64x8(array, index, count), codegen


# Additions for the one-output wide kernel (kernels.cpu._wide_rows, benchmarks/README.md item 48):
#
#    _load_wide(a, i)         a[i:i + 8] as float64 (a: 1-D float32 or float64; float32 widened: vcvtps2pd)
#    _mul(a, b)               a * b, lane-wise
#    _lane(v, k)              lane k of v, a float64 scalar
#    _transpose_sum(v0, ..., v7)  the vector (sum(v0), sum(v1), ..., sum(v7)): 8 horizontal sums in 7 adds
#                             and 14 two-source shuffles (a transpose-reduce), each lane's additions in a
#                             fixed order (pairwise halves), no fast-math flags


@intrinsic
def _load_wide(typingctx, array, index):
    if not _is_float_array(array) or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        element = context.get_value_type(signature.args[0].dtype)
        vector = ir.VectorType(element, LANES)
        loaded = builder.load(_address(context, builder, signature.args[0], args[0], args[1], vector), align=4)
        return loaded if element == ir.DoubleType() else builder.fpext(loaded, _VECTOR)

    return f64x8(array, index), codegen


@intrinsic
def _mul(typingctx, a, b):
    if not (a == b == f64x8):
        return None

    def codegen(context, builder, signature, args):
        return builder.fmul(args[0], args[1])

    return f64x8(a, b), codegen


@intrinsic
def _lane(typingctx, vector, index):
    if vector != f64x8 or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.extract_element(args[0], args[1])

    return types.float64(vector, index), codegen


def _shuffle_add(builder, a, b, low, high):
    """shuffle(a, b, low) + shuffle(a, b, high): indices 0-7 pick a's lanes, 8-15 b's."""
    i32x8 = ir.VectorType(ir.IntType(32), LANES)
    return builder.fadd(builder.shuffle_vector(a, b, ir.Constant(i32x8, low)),
                        builder.shuffle_vector(a, b, ir.Constant(i32x8, high)))


@intrinsic
def _transpose_sum(typingctx, v0, v1, v2, v3, v4, v5, v6, v7):
    if not all(v == f64x8 for v in (v0, v1, v2, v3, v4, v5, v6, v7)):
        return None

    def codegen(context, builder, signature, args):
        # Step 1, halves: [a0+a4, a1+a5, a2+a6, a3+a7, b0+b4, ...] for the pairs (v0, v1), (v2, v3), ...
        halves = [_shuffle_add(builder, args[k], args[k + 1], [0, 1, 2, 3, 8, 9, 10, 11],
                               [4, 5, 6, 7, 12, 13, 14, 15]) for k in range(0, 8, 2)]
        # Step 2, quarters: from [A0..A3 B0..B3] and [C0..C3 D0..D3] make [A0+A2, A1+A3, C., C., B., B., D., D.].
        quarters = [_shuffle_add(builder, halves[k], halves[k + 1], [0, 1, 8, 9, 4, 5, 12, 13],
                                 [2, 3, 10, 11, 6, 7, 14, 15]) for k in (0, 2)]
        # Step 3: lanes (A, B, C, D, E, F, G, H) from [A A C C B B D D] and [E E G G F F H H].
        return _shuffle_add(builder, quarters[0], quarters[1], [0, 4, 2, 6, 8, 12, 10, 14],
                            [1, 5, 3, 7, 9, 13, 11, 15])

    return f64x8(v0, v1, v2, v3, v4, v5, v6, v7), codegen


# 16-lane float32 vectors (LLVM <16 x float>), for float32 products and short float32 partial sums:
#
#    _load16(a, i)            a[i:i + 16]          (a: 1-D float32)
#    _splat16(x)              (x, ..., x)          x a float64 scalar, rounded to float32
#    _fma16(a, b, c), _mul16(a, b), _add16(a, b)   lane-wise, as the float64 ones
#    _widen_low(v), _widen_high(v)                 lanes 0-7 / 8-15 of v as an f64x8 (exact)

_VECTOR16 = ir.VectorType(ir.FloatType(), 2 * LANES)


class Float32x16(types.Type):
    """Numba type of 16 float32 lanes (LLVM ``<16 x float>``)."""

    def __init__(self) -> None:
        super().__init__(name="f32x16")


f32x16 = Float32x16()


@register_model(Float32x16)
class _Float32x16Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VECTOR16)


@intrinsic
def _load16(typingctx, array, index):
    if not (isinstance(array, types.Array) and array.ndim == 1 and array.dtype == types.float32
            and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        return builder.load(_address(context, builder, signature.args[0], args[0], args[1], _VECTOR16), align=4)

    return f32x16(array, index), codegen


@intrinsic
def _splat16(typingctx, scalar):
    if scalar != types.float64:
        return None

    def codegen(context, builder, signature, args):
        single = builder.fptrunc(args[0], ir.FloatType())
        one = builder.insert_element(ir.Constant(_VECTOR16, ir.Undefined), single, ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(ir.IntType(32), 2 * LANES),
                                                            [0] * (2 * LANES)))

    return f32x16(scalar), codegen


@intrinsic
def _fma16(typingctx, a, b, c):
    if not (a == b == c == f32x16):
        return None

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(_VECTOR16, [_VECTOR16] * 3)
        return builder.call(cgutils.get_or_insert_function(builder.module, fnty, "llvm.fma.v16f32"), args)

    return f32x16(a, b, c), codegen


@intrinsic
def _mul16(typingctx, a, b):
    if not (a == b == f32x16):
        return None

    def codegen(context, builder, signature, args):
        return builder.fmul(args[0], args[1])

    return f32x16(a, b), codegen


@intrinsic
def _add16(typingctx, a, b):
    if not (a == b == f32x16):
        return None

    def codegen(context, builder, signature, args):
        return builder.fadd(args[0], args[1])

    return f32x16(a, b), codegen


def _widen(first):
    def typer(typingctx, vector):
        if vector != f32x16:
            return None

        def codegen(context, builder, signature, args):
            half = builder.shuffle_vector(args[0], args[0], ir.Constant(ir.VectorType(ir.IntType(32), LANES),
                                                                        list(range(first, first + LANES))))
            return builder.fpext(half, _VECTOR)

        return f64x8(vector), codegen

    typer.__name__ = "_widen_high" if first else "_widen_low"
    return typer


_widen_low = intrinsic(_widen(0))
_widen_high = intrinsic(_widen(LANES))
