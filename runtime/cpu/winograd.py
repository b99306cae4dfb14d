"""Winograd F(2x2, 3x3) convolution: a 3x3 stride-1 convolution in 2.25x fewer multiplications.

Each 2x2 block of output pixels (a *tile*) is computed from the 4x4 input patch around it as
``A^T [ (G g G^T) * (B^T d B) ] A`` (Lavin and Gray, 2015): with every tile's 16 transformed inputs
``V = B^T d B`` and every filter's 16 transformed weights ``U = G g G^T`` laid out position-major, the
sum over input channels is 16 independent GEMMs, ``M[xi] (K, T) = U[xi] (K, C) @ V[xi] (C, T)``, which the
pointwise kernel computes as one 1x1 convolution with 16 groups. The transforms here add only and
subtract (B and A hold 0 and +-1; G's halves are folded into U once, when the weight is packed).

Band by band of tile rows (``winograd_plan.bands``), for the whole batch: ``input_transform_kernel``
(input -> V), the grouped GEMM, ``output_transform_kernel`` (M -> output, with the bias, the residual and
the activation). V and M live in the step's workspace, which the memory plan places in the arena. The
rounding differs from the direct kernels' (the sums run in another order; G's halves are exact in binary):
relative differences of about 1e-6 of the output's magnitude. Which convolutions take this path:
``winograd_plan.applies``.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from ._act import act_range, clamp_f32, register_clamp
from ._stack import stack_f32
from ..winograd_plan import ROW_CAPACITY, bands, tiles
from .conv import conv2d_pointwise_kernel

ROW_BUFFER = 4 * ROW_CAPACITY

_NO_RESIDUAL = np.empty(0, np.float32)
U = np.uint64  # index cast that removes Numba's negative-index wraparound code
_FM = {"contract"}

# G of F(2x2, 3x3) (B^T and A^T are written out in the kernels)
G_MATRIX = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def transform_weight(weight: np.ndarray) -> np.ndarray:
    """(K, C, 3, 3) -> U (16 * K, C, 1, 1): position xi = 4a + b of G g G^T, as the weight of a 1x1
    convolution with 16 groups (group xi maps V[xi] to M[xi]). Computed in float64, rounded once."""
    u = np.einsum("ai,kcij,bj->abkc", G_MATRIX, weight.astype(np.float64), G_MATRIX)
    k, c = weight.shape[:2]
    return np.ascontiguousarray(u.reshape(16 * k, c, 1, 1).astype(np.float32))


@numba.njit(cache=True, error_model="numpy", parallel=True, fastmath=_FM)
def input_transform_kernel(xf, N, C, H, W, pt, pl, ty0, ty1, TW, vf):
    """V = B^T d B of the 4x4 patches of tile rows ty0 .. ty1 - 1 of every sample of ``xf`` (flat (N, C, H, W));
    patch (ty, tx) has its top-left input pixel at (2ty - pt, 2tx - pl), zero outside the plane. ``vf``
    flat (N, 16, C, (ty1 - ty0) * TW): per sample, the input of the 16-group 1x1 convolution.

    The four input rows of a tile row are split into even and odd columns first, so that the patches of
    consecutive tiles are contiguous loads and the loop over tiles is a vector loop."""
    T = (ty1 - ty0) * TW
    CT = C * T
    zero = np.float32(0.0)
    # patch column 2j of the padded row is input column 2j - pl (even part), 2j + 1 is 2j + 1 - pl (odd)
    e0 = (pl + 1) // 2
    e1 = max(e0, min(TW + 1, (W - 1 + pl) // 2 + 1))
    o0 = pl // 2
    o1 = max(o0, min(TW + 1, (W - 2 + pl) // 2 + 1)) if W - 2 + pl >= 0 else o0
    both0 = max(e0, o0)
    both1 = max(both0, min(e1, o1))
    for nc in prange(N * C):
        n = nc // C
        c = nc - n * C
        # row r, column j at r * (TW + 1) + j; on the stack, so that LLVM knows the tile loop's stores to
        # ``vf`` cannot change them (heap buffers here kept that loop scalar: 10x slower)
        ev = stack_f32(ROW_BUFFER)
        od = stack_f32(ROW_BUFFER)
        for j in range(4 * (TW + 1)):
            ev[j] = zero
            od[j] = zero
        for ty in range(ty0, ty1):
            for r in range(4):
                ih = 2 * ty - pt + r
                b = r * (TW + 1)
                if ih < 0 or ih >= H:
                    for j in range(TW + 1):
                        ev[U(b + j)] = zero
                        od[U(b + j)] = zero
                    continue
                row = ((n * C + c) * H + ih) * W - pl  # + 2j: even column j, + 2j + 1: odd column j
                # both columns of a pair in one loop (an interleaved load; alone, each was a gather)
                for j in range(e0, min(e1, both0)):
                    ev[U(b + j)] = xf[U(row + 2 * j)]
                for j in range(o0, min(o1, both0)):
                    od[U(b + j)] = xf[U(row + 2 * j + 1)]
                for j in range(both0, both1):
                    ev[U(b + j)] = xf[U(row + 2 * j)]
                    od[U(b + j)] = xf[U(row + 2 * j + 1)]
                for j in range(max(both1, e0), e1):
                    ev[U(b + j)] = xf[U(row + 2 * j)]
                for j in range(max(both1, o0), o1):
                    od[U(b + j)] = xf[U(row + 2 * j + 1)]
            o = n * 16 * CT + c * T + (ty - ty0) * TW
            S = TW + 1
            for tx in range(TW):
                # columns 2tx .. 2tx+3 of the patch: even tx, odd tx, even tx+1, odd tx+1
                d00 = ev[U(0 * S + tx)]
                d01 = od[U(0 * S + tx)]
                d02 = ev[U(0 * S + tx + 1)]
                d03 = od[U(0 * S + tx + 1)]
                d10 = ev[U(1 * S + tx)]
                d11 = od[U(1 * S + tx)]
                d12 = ev[U(1 * S + tx + 1)]
                d13 = od[U(1 * S + tx + 1)]
                d20 = ev[U(2 * S + tx)]
                d21 = od[U(2 * S + tx)]
                d22 = ev[U(2 * S + tx + 1)]
                d23 = od[U(2 * S + tx + 1)]
                d30 = ev[U(3 * S + tx)]
                d31 = od[U(3 * S + tx)]
                d32 = ev[U(3 * S + tx + 1)]
                d33 = od[U(3 * S + tx + 1)]
                # B^T d: rows (d0 - d2, d1 + d2, d2 - d1, d1 - d3)
                t00 = d00 - d20
                t01 = d01 - d21
                t02 = d02 - d22
                t03 = d03 - d23
                t10 = d10 + d20
                t11 = d11 + d21
                t12 = d12 + d22
                t13 = d13 + d23
                t20 = d20 - d10
                t21 = d21 - d11
                t22 = d22 - d12
                t23 = d23 - d13
                t30 = d10 - d30
                t31 = d11 - d31
                t32 = d12 - d32
                t33 = d13 - d33
                # (B^T d) B: the same on columns
                q = o + tx
                vf[U(q)] = t00 - t02
                vf[U(CT + q)] = t01 + t02
                vf[U(2 * CT + q)] = t02 - t01
                vf[U(3 * CT + q)] = t01 - t03
                vf[U(4 * CT + q)] = t10 - t12
                vf[U(5 * CT + q)] = t11 + t12
                vf[U(6 * CT + q)] = t12 - t11
                vf[U(7 * CT + q)] = t11 - t13
                vf[U(8 * CT + q)] = t20 - t22
                vf[U(9 * CT + q)] = t21 + t22
                vf[U(10 * CT + q)] = t22 - t21
                vf[U(11 * CT + q)] = t21 - t23
                vf[U(12 * CT + q)] = t30 - t32
                vf[U(13 * CT + q)] = t31 + t32
                vf[U(14 * CT + q)] = t32 - t31
                vf[U(15 * CT + q)] = t31 - t33


@numba.njit(cache=True, error_model="numpy", parallel=True, fastmath=_FM)
def output_transform_kernel(mf, N, K, ty0, ty1, TW, bias, act, act_a, act_b, res, of, OH, OW):
    """out = act(A^T m A + bias [+ res]) on the output rows of tile rows ty0 .. ty1 - 1 of every sample:
    ``mf`` flat (N, 16, K, (ty1 - ty0) * TW); ``of`` flat (N, K, OH, OW); ``res`` empty or the residual (flat,
    the output's shape; it may be ``of`` itself: each element is read before it is written). Output rows
    are built in two row buffers (even and odd columns interleaved by the vector loop's stores), then added
    to the residual, clamped and stored."""
    T = (ty1 - ty0) * TW
    KT = K * T
    has_res = res.size > 0
    lo, hi, in_regs = register_clamp(act)
    for nk in prange(N * K):
        n = nk // K
        k = nk - n * K
        bv = bias[k]
        r0 = np.empty(2 * TW, np.float32)
        r1 = np.empty(2 * TW, np.float32)
        for ty in range(ty0, ty1):
            o = n * 16 * KT + k * T + (ty - ty0) * TW
            for tx in range(TW):
                q = o + tx
                m0 = mf[U(q)]
                m1 = mf[U(KT + q)]
                m2 = mf[U(2 * KT + q)]
                m3 = mf[U(3 * KT + q)]
                m4 = mf[U(4 * KT + q)]
                m5 = mf[U(5 * KT + q)]
                m6 = mf[U(6 * KT + q)]
                m7 = mf[U(7 * KT + q)]
                m8 = mf[U(8 * KT + q)]
                m9 = mf[U(9 * KT + q)]
                m10 = mf[U(10 * KT + q)]
                m11 = mf[U(11 * KT + q)]
                m12 = mf[U(12 * KT + q)]
                m13 = mf[U(13 * KT + q)]
                m14 = mf[U(14 * KT + q)]
                m15 = mf[U(15 * KT + q)]
                # A^T m: rows (m0 + m1 + m2, m1 - m2 - m3)
                a0 = m0 + m4 + m8
                a1 = m1 + m5 + m9
                a2 = m2 + m6 + m10
                a3 = m3 + m7 + m11
                b0 = m4 - m8 - m12
                b1 = m5 - m9 - m13
                b2 = m6 - m10 - m14
                b3 = m7 - m11 - m15
                r0[2 * tx] = a0 + a1 + a2 + bv
                r0[2 * tx + 1] = a1 - a2 - a3 + bv
                r1[2 * tx] = b0 + b1 + b2 + bv
                r1[2 * tx + 1] = b1 - b2 - b3 + bv
            for half in range(2):
                oh = 2 * ty + half
                if oh >= OH:
                    break
                src = r0 if half == 0 else r1
                base = ((n * K + k) * OH + oh) * OW
                if has_res:
                    for ow in range(OW):
                        of[U(base + ow)] = clamp_f32(src[ow] + res[U(base + ow)], lo, hi)
                else:
                    for ow in range(OW):
                        of[U(base + ow)] = clamp_f32(src[ow], lo, hi)
                if not in_regs:
                    act_range(of, base, OW, act, act_a, act_b)


def winograd_conv(x, wq, bias, zero_bias, pads, act, residual, out, workspace):
    """out = act(conv3x3(x) + bias [+ residual]) for x (N, C, H, W), out (N, K, OH, OW); ``wq`` the
    pointwise-packed ``transform_weight`` (16 groups); ``zero_bias`` 16 * K zeros (the GEMM's bias);
    ``residual`` flat or empty; ``workspace`` flat, at least N * ``workspace_floats`` floats."""
    n, c, h, w = x.shape
    _, k, oh, ow = out.shape
    tw = tiles(oh, ow)[1]
    xf = x.reshape(-1)
    of = out.reshape(-1)
    for ty0, ty1 in bands(c, k, oh, ow):
        t = (ty1 - ty0) * tw
        v = workspace[: n * 16 * c * t]
        m = workspace[n * 16 * c * t: n * 16 * (c + k) * t]
        input_transform_kernel(xf, n, c, h, w, pads[0], pads[1], ty0, ty1, tw, v)
        conv2d_pointwise_kernel(v.reshape(n, 16 * c, 1, t), wq, zero_bias, 0, 0.0, 0.0, _NO_RESIDUAL,
                                m.reshape(n, 16 * k, 1, t))
        output_transform_kernel(m, n, k, ty0, ty1, tw, bias, *act, residual, of, oh, ow)
    return out
