"""Shared arithmetic for sliding windows (convolution and pooling)."""

from __future__ import annotations

from . import ShapeError


def same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow/ONNX SAME_UPPER: output = ceil(size / stride); the extra pixel goes at the end."""
    eff = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + eff - size, 0)
    return total // 2, total - total // 2


def resolve_pads(attrs: dict, key: str, in_hw, kernel, stride, dilation) -> tuple[int, int, int, int]:
    # The user's `padding` is replaced by the resolved `pads` (top, left, bottom, right).
    pads = attrs.pop(key) if key in attrs else attrs["pads"]
    if pads == "valid":
        pads = (0, 0, 0, 0)
    elif pads == "same":
        top, bottom = same_pads(in_hw[0], kernel[0], stride[0], dilation[0])
        left, right = same_pads(in_hw[1], kernel[1], stride[1], dilation[1])
        pads = (top, left, bottom, right)
    attrs["pads"] = tuple(pads)
    return tuple(pads)


def window_out(size: int, pad_begin: int, pad_end: int, kernel: int, stride: int, dilation: int,
               ceil_mode: bool, axis: str, ctx) -> int:
    """Output length of a sliding window along one axis, with PyTorch's rules, and a warning when
    real input rows/columns are never covered (floor rounding silently drops them)."""
    eff = (kernel - 1) * dilation + 1
    padded = size + pad_begin + pad_end
    if eff > padded:
        raise ShapeError(
            f"window of {eff} (kernel {kernel}" + (f", dilation {dilation}" if dilation > 1 else "")
            + f") is larger than the padded input {axis} of {padded} ({size} + padding {pad_begin}+{pad_end})",
            "use a smaller kernel, more padding, or a larger input", code="E301")
    span = padded - eff
    if ceil_mode:
        out = -(-span // stride) + 1
        # PyTorch: the last window must start inside the input or the left padding.
        if (out - 1) * stride >= size + pad_begin:
            out -= 1
    else:
        out = span // stride + 1
    covered = (out - 1) * stride + eff
    dropped = max(0, padded - covered - pad_end)
    # With stride > window, rows between windows are skipped by design; only warn for contiguous windows.
    if dropped and ctx is not None and stride <= eff:
        noun = "row" if axis.startswith("height") else "column"
        ctx.warn(f"the last {dropped} input {noun}{'s' if dropped > 1 else ''} of {size} "
                 f"are never read (window {eff}, stride {stride}, floor rounding)",
                 "use ceil_mode=true, adjust padding, or change the input size if this is not intended")
    return out
