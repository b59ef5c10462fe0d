"""Unfold and Fold (PyTorch's ``nn.Unfold`` and ``nn.Fold``): im2col and
col2im as layers.

Unfold lays every sliding window of an image out as a column:

    x (N, C, H, W)  →  blocks (N, C·KH·KW, L),   L = OH·OW windows
    blocks[n, (c·KH + i)·KW + j, oh·OW + ow] = x[n, c, oh·SH - PH + i·DH, ow·SW - PW + j·DW]

(zero where a window reads padding).  Every output is a copy of one input
(or a zero), so the Jacobian is a 0/1 matrix P and the backward is its
transpose: dx = Pᵀ dblocks, each input summing the gradients of every
window position that copied it, which is Fold.  Fold is Unfold's adjoint
(col2im) and its backward is Unfold.  A convolution is Unfold, one GEMM
with the weight as a (O, C·KH·KW) matrix, and a reshape; lamina's
Conv2D runs exactly these kernels (``lamina.ops.im2col``/``col2im``, C++
on the CPU), and these layers make them usable on their own (patch
embeddings, local attention, a convolution written out by hand).
"""

from .. import backend, ops
from ..errors import ShapeError
from ..module import Layer
from ._utils import as_tuple


class _FoldBase(Layer):
    """What Fold and Unfold share: the window's geometry, with PyTorch's
    argument order and names, and the two layouts of a col: lamina's
    kernels use (C·KH·KW, N·L), the layers (N, C·KH·KW, L)."""

    def __init__(self, kernel_size, dilation=1, padding=0, stride=1):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = as_tuple(kernel_size, 2, name, "kernel_size", minimum=1)
        self.dilation = as_tuple(dilation, 2, name, "dilation", minimum=1)
        self.padding = as_tuple(padding, 2, name, "padding", minimum=0)
        self.stride = as_tuple(stride, 2, name, "stride", minimum=1)

    def _geometry(self, n, c, h, w):
        ph, pw = self.padding
        return ops.geometry((n, c, h, w), self.kernel_size, self.stride, (ph, ph, pw, pw), self.dilation)

    @staticmethod
    def _to_blocks(col, g):
        """(C·KH·KW, N·L) → (N, C·KH·KW, L)."""
        xp = backend.get_array_module(col)
        return xp.ascontiguousarray(col.reshape(col.shape[0], g.n, g.oh * g.ow).transpose(1, 0, 2))

    @staticmethod
    def _from_blocks(blocks):
        """(N, C·KH·KW, L) → (C·KH·KW, N·L)."""
        xp = backend.get_array_module(blocks)
        n, k, length = blocks.shape
        return xp.ascontiguousarray(blocks.transpose(1, 0, 2)).reshape(k, n * length)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, dilation={self.dilation}, padding={self.padding}, "
                f"stride={self.stride}")


class Unfold(_FoldBase):
    """Sliding windows as columns (im2col): (N, C, H, W) → (N, C·KH·KW, L),
    or (C, H, W) → (C·KH·KW, L) unbatched.  See the module docstring for
    the layout; backward is :class:`Fold` of the gradient (col2im).

    Args: kernel_size, dilation=1, padding=0 (both sides), stride=1, each
    an int or a pair, as PyTorch's.
    """

    def forward(self, x):
        x = self._check_input(x)
        if x.ndim not in (3, 4):
            raise ShapeError(f"{self._label()}: expected a 4-d input (N, C, H, W) or a 3-d (C, H, W), "
                             f"received shape {tuple(x.shape)}")
        batched = x.ndim == 4
        x4 = x if batched else x[None]
        g = self._geometry(*x4.shape)
        if g.oh < 1 or g.ow < 1:
            raise ShapeError(f"{self._label()}: expected an input at least as large as one window, received shape "
                             f"{tuple(x.shape)} (windows {max(g.oh, 0)} x {max(g.ow, 0)})")
        y = self._to_blocks(ops.im2col(x4, g), g)
        y = y if batched else y[0]
        self._save(g, out=y)
        return y

    def backward(self, dy):
        g = self._take_cache(dy)
        dy3 = dy if dy.ndim == 3 else dy[None]
        dx = ops.col2im(self._from_blocks(dy3), g)
        return dx if dy.ndim == 3 else dx[0]


class Fold(_FoldBase):
    """Columns back into an image, summing where windows overlap (col2im):
    (N, C·KH·KW, L) → (N, C, H, W), or (C·KH·KW, L) → (C, H, W), with
    (H, W) = ``output_size`` and L the number of windows that fit in it.
    Fold(Unfold(x)) multiplies each pixel by the number of windows that
    cover it.  Backward is :class:`Unfold` of the gradient (im2col).

    Args: output_size (an int or a pair), then kernel_size, dilation=1,
    padding=0, stride=1, as PyTorch's.
    """

    def __init__(self, output_size, kernel_size, dilation=1, padding=0, stride=1):
        super().__init__(kernel_size, dilation, padding, stride)
        self.output_size = as_tuple(output_size, 2, "Fold", "output_size", minimum=1)

    def forward(self, x):
        x = self._check_input(x)
        if x.ndim not in (2, 3):
            raise ShapeError(f"{self._label()}: expected a 3-d input (N, C·KH·KW, L) or a 2-d (C·KH·KW, L), "
                             f"received shape {tuple(x.shape)}")
        batched = x.ndim == 3
        x3 = x if batched else x[None]
        n, k, length = x3.shape
        taps = self.kernel_size[0] * self.kernel_size[1]
        g = self._geometry(n, max(k // taps, 1), *self.output_size)
        if k % taps or length != g.oh * g.ow or g.oh < 1 or g.ow < 1:
            raise ShapeError(f"{self._label()}: expected an input (N, C·{taps}, {max(g.oh, 0) * max(g.ow, 0)}) for "
                             f"{taps} taps and the {max(g.oh, 0)} x {max(g.ow, 0)} windows of a {self.output_size[0]} x "
                             f"{self.output_size[1]} output, received shape {tuple(x.shape)}")
        y = ops.col2im(self._from_blocks(x3), g)
        y = y if batched else y[0]
        self._save(g, out=y)
        return y

    def backward(self, dy):
        g = self._take_cache(dy)
        dy4 = dy if dy.ndim == 4 else dy[None]
        dx = self._to_blocks(ops.im2col(dy4, g), g)
        return dx if dy.ndim == 4 else dx[0]

    def extra_repr(self):
        return f"output_size={self.output_size}, " + super().extra_repr()
