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


def _unfold(x, g):
    """im2col in PyTorch's layout: x (N, C, H, W) → blocks (N, C·KH·KW, L).
    lamina's kernel writes (C·KH·KW, N·L)."""
    xp = backend.get_array_module(x)
    col = ops.im2col(x, g)
    return xp.ascontiguousarray(col.reshape(col.shape[0], g.n, g.oh * g.ow).transpose(1, 0, 2))


def _fold(blocks, g):
    """col2im from PyTorch's layout: blocks (N, C·KH·KW, L) → (N, C, H, W),
    summing where windows overlap."""
    xp = backend.get_array_module(blocks)
    n, k, length = blocks.shape
    return ops.col2im(xp.ascontiguousarray(blocks.transpose(1, 0, 2)).reshape(k, n * length), g)


class _FoldBase(Layer):
    """What Fold and Unfold share: the window's geometry, with PyTorch's
    argument order and names, and the call: an optional batch axis, the map
    forward (``_map``) and its adjoint backward (``_adjoint``)."""

    _ndim = 4  # of a batched input
    _layouts = ("", "")  # the batched and unbatched layouts, for errors

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

    def _plan(self, x, xb):
        """The geometry for the batched input ``xb``; raises a ShapeError
        naming ``x``'s shape when it does not fit."""
        raise NotImplementedError

    def forward(self, x):
        x = self._check_input(x)
        batched, unbatched = self._layouts
        if x.ndim not in (self._ndim, self._ndim - 1):
            raise ShapeError(f"{self._label()}: expected a {self._ndim}-d input {batched} or a {self._ndim - 1}-d "
                             f"{unbatched}, received shape {tuple(x.shape)}")
        has_batch = x.ndim == self._ndim
        xb = x if has_batch else x[None]
        g = self._plan(x, xb)
        y = type(self)._map(xb, g)
        y = y if has_batch else y[0]
        self._save(g, has_batch, out=y)
        return y

    def backward(self, dy):
        g, has_batch = self._take_cache(dy)
        dx = type(self)._adjoint(dy if has_batch else dy[None], g)
        return dx if has_batch else dx[0]

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

    _ndim, _layouts = 4, ("(N, C, H, W)", "(C, H, W)")
    _map, _adjoint = staticmethod(_unfold), staticmethod(_fold)

    def _plan(self, x, xb):
        g = self._geometry(*xb.shape)
        if g.oh < 1 or g.ow < 1:
            raise ShapeError(f"{self._label()}: expected an input at least as large as one window, received shape "
                             f"{tuple(x.shape)} (windows {max(g.oh, 0)} x {max(g.ow, 0)})")
        return g


class Fold(_FoldBase):
    """Columns back into an image, summing where windows overlap (col2im):
    (N, C·KH·KW, L) → (N, C, H, W), or (C·KH·KW, L) → (C, H, W), with
    (H, W) = ``output_size`` and L the number of windows that fit in it.
    Fold(Unfold(x)) multiplies each pixel by the number of windows that
    cover it.  Backward is :class:`Unfold` of the gradient (im2col).

    Args: output_size (an int or a pair), then kernel_size, dilation=1,
    padding=0, stride=1, as PyTorch's.
    """

    _ndim, _layouts = 3, ("(N, C·KH·KW, L)", "(C·KH·KW, L)")
    _map, _adjoint = staticmethod(_fold), staticmethod(_unfold)

    def __init__(self, output_size, kernel_size, dilation=1, padding=0, stride=1):
        super().__init__(kernel_size, dilation, padding, stride)
        self.output_size = as_tuple(output_size, 2, "Fold", "output_size", minimum=1)

    def _plan(self, x, xb):
        n, k, length = xb.shape
        taps = self.kernel_size[0] * self.kernel_size[1]
        g = self._geometry(n, max(k // taps, 1), *self.output_size)
        if k % taps or length != g.oh * g.ow or g.oh < 1 or g.ow < 1:
            raise ShapeError(f"{self._label()}: expected an input (N, C·{taps}, {max(g.oh, 0) * max(g.ow, 0)}) for "
                             f"{taps} taps and the {max(g.oh, 0)} x {max(g.ow, 0)} windows of a {self.output_size[0]} x "
                             f"{self.output_size[1]} output, received shape {tuple(x.shape)}")
        return g

    def extra_repr(self):
        return f"output_size={self.output_size}, " + super().extra_repr()
