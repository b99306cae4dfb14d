"""Detection heads: YOLO decoding of raw prediction maps into boxes."""

from __future__ import annotations

from . import Attr, OpDef, ShapeError, k_anchors, k_int, k_pair, positive, register


def _yolo_shape(shapes, attrs, ctx):
    (x,) = shapes
    if len(x) != 3:
        raise ShapeError(f"yolo needs a (N, C, H, W) prediction map, found rank {len(x) + 1}", code="E302")
    a, c = len(attrs["anchors"]), attrs["classes"]
    if x[0] != a * (5 + c):
        raise ShapeError(f"yolo with {a} anchors and {c} classes needs {a} * (5 + {c}) = {a * (5 + c)} "
                         f"channels, found {x[0]}",
                         f"the conv before it should have filters = {a} * (classes + 5)", code="E300")
    return (a * x[1] * x[2], 5 + c)


register(OpDef(
    name="yolo",
    doc="YOLO head decode: (N, A*(5+C), H, W) -> (N, A*H*W, 5+C) boxes (x, y, w, h in input pixels, "
        "objectness, class scores). yolo(anchors, classes, image_size=(h, w)).",
    attrs=[Attr("anchors", k_anchors), Attr("classes", k_int, checks=(positive,)),
           Attr("image_size", k_pair, checks=(positive,))],
    shape=_yolo_shape, reference="yolo_decode", category="detect",
), aliases=("yolo_decode",))
