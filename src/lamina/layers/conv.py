"""Convolution layers: Conv2D on (N, C, H, W) and Conv1D on (N, C, L).

Both run on the same machinery (:mod:`lamina.ops.conv`), which picks the
kernel: on the CPU, stride-1 convolutions run on lamina's direct kernel (no
col matrix; backward reads the cached input), the others as im2col, one GEMM
per group, and col2im for the input gradient; on the GPU, im2col + cuBLAS or
lamina's implicit GEMM (``use_kernels``).  Conv1D is Conv2D with H = 1.  The
math is derived in docs/convolution.md.
"""

import math

import numpy as np

from .. import backend, init, ops
from ..errors import ShapeError
from ..module import Layer, Parameter, is_grad_enabled
from ._utils import as_tuple, positive_int


_PADDING_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


class _ConvNd(Layer):
    """Shared by Conv1D and Conv2D: arguments, parameters, forward and backward."""

    _nd = 2

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 dtype=np.float32, keep_col=True, padding_mode="zeros"):
        super().__init__()
        self.keep_col = bool(keep_col)
        name = type(self).__name__
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"{name}: expected padding_mode in {tuple(_PADDING_MODES)}, received {padding_mode!r}")
        self.padding_mode = padding_mode
        self.in_channels = positive_int(in_channels, name, "in_channels")
        self.out_channels = positive_int(out_channels, name, "out_channels")
        self.groups = positive_int(groups, name, "groups")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"{name}: expected in_channels ({self.in_channels}) and out_channels ({self.out_channels}) "
                f"to be divisible by groups ({self.groups})"
            )
        nd = self._nd
        self.kernel_size = as_tuple(kernel_size, nd, name, "kernel_size")
        self.stride = as_tuple(stride, nd, name, "stride")
        self.dilation = as_tuple(dilation, nd, name, "dilation")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"{name}: expected padding 'same', 'valid', an int or a tuple, received {padding!r}")
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError(f"{name}: padding='same' needs stride 1, received stride {self.stride}")
            self.padding = padding
        else:
            self.padding = as_tuple(padding, nd, name, "padding", minimum=0)
        self.weight = Parameter(np.empty(self._weight_shape(), dtype=dtype))
        self.bias = Parameter(np.empty((self.out_channels,), dtype=dtype)) if bias else None
        self.reset_parameters()

    def _weight_shape(self):
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def reset_parameters(self):
        """PyTorch's defaults: kaiming_uniform(a=√5) weights, U(±1/√fan_in) bias."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init.fan_in_and_fan_out(self.weight.shape)
            bound = 1.0 / math.sqrt(fan_in)
            init.uniform_(self.bias, -bound, bound)

    def pads(self):
        """(before, after) padding of each spatial dimension; 'same' splits
        dilation*(k-1) with the extra element after, as PyTorch."""
        if self.padding == "valid":
            return tuple((0, 0) for _ in range(self._nd))
        if self.padding == "same":
            out = []
            for k, d in zip(self.kernel_size, self.dilation):
                total = d * (k - 1)
                out.append((total // 2, total - total // 2))
            return tuple(out)
        return tuple((p, p) for p in self.padding)

    # Conv1D maps onto the 2-d machinery with a height-1 kernel.
    def _as_2d(self):
        pads = self.pads()
        if self._nd == 2:
            return self.kernel_size, self.stride, (*pads[0], *pads[1]), self.dilation
        (k,), (s,), (d,) = self.kernel_size, self.stride, self.dilation
        return (1, k), (1, s), (0, 0, *pads[0]), (1, d)

    def _weight_2d(self):
        w = self._compute(self.weight)
        return w if self._nd == 2 else w.reshape(w.shape[0], w.shape[1], 1, w.shape[2])

    def forward(self, x):
        x = self._check_input(x, ndim=self._nd + 2, dim=[(1, self.in_channels, "in_channels")])
        x4 = x if self._nd == 2 else x.reshape(x.shape[0], x.shape[1], 1, x.shape[2])
        kernel, stride, padding, dilation = self._as_2d()
        if self.padding_mode != "zeros":  # pad explicitly, then convolve unpadded; backward folds the borders back
            x4 = self._pad(x, x4, padding)
            padding = (0, 0, 0, 0)
        g = ops.geometry(x4.shape, kernel, stride, padding, dilation)
        if g.oh < 1 or g.ow < 1:
            raise ShapeError(
                f"{self._label()}: expected an input whose padded spatial size covers the dilated kernel, "
                f"received shape {tuple(x.shape)}"
            )
        bias = None if self.bias is None else self._compute(self.bias)
        weight = self._weight_2d()
        if ops.col_free(x4, weight, g):  # direct (CPU) or implicit-GEMM (CUDA) kernel: backward needs only x
            y4 = ops.conv2d_forward_col_free(x4, weight, bias, g, self.groups)
            saved = ("x", x4)
        else:
            keep = is_grad_enabled() and self.keep_col
            y4, col = ops.conv2d_forward(x4, weight, bias, g, self.groups, keep_col=keep)
            # col: (C*KH*KW, N*OH*OW), or x4 (N, C, H, W) with keep_col=False
            saved = ("col", col) if keep else ("x", x4)
        y = y4 if self._nd == 2 else y4.reshape(g.n, self.out_channels, g.ow)
        self._save(*saved, g, out=y)  # g: ops.Geometry
        return y

    def _pad(self, x, x4, padding):
        """x4 padded by ``padding`` (top, bottom, left, right) in ``padding_mode``."""
        mode = _PADDING_MODES[self.padding_mode]
        pads = ((padding[0], padding[1]), (padding[2], padding[3]))
        for size, (before, after), axis in zip(x4.shape[2:], pads, ("height", "width")):
            least = max(before, after) + (mode == "reflect")  # reflect needs pad < size, circular pad <= size
            if mode in ("reflect", "circular") and size < least:
                raise ShapeError(
                    f"{self._label()}: expected an input {axis} of at least {least} for {self.padding_mode} padding, "
                    f"received shape {tuple(x.shape)}"
                )
        return ops.pad(x4, pads, mode)

    def backward(self, dy):
        return self._backward(dy, need_dx=True)

    def backward_parameters(self, dy):
        """dW and db only: skips backward-data and col2im (:meth:`Layer.backward_parameters`)."""
        self._backward(dy, need_dx=False)

    def _backward(self, dy, need_dx):
        kind, saved, g = self._take_cache(dy)
        dy4 = self._compute_grad(dy).reshape(g.n, self.out_channels, g.oh, g.ow)
        weight = self._weight_2d()
        if kind == "x" and ops.col_free(saved, weight, g):
            dx4, dweight, dbias = ops.conv2d_backward_col_free(dy4, saved, weight, g, self.groups, need_dx=need_dx,
                                                               need_bias=self.bias is not None)
        else:
            col = saved if kind == "col" else ops.im2col(saved, g, pooled=True)  # rebuild col from the input
            dx4, dweight, dbias = ops.conv2d_backward(dy4, col, weight, g, self.groups, need_dx=need_dx)
        self.weight.accumulate(dweight.reshape(self.weight.shape), owned=True)
        if self.bias is not None:
            self.bias.accumulate(dbias, owned=True)
        if dx4 is None:
            return None
        if self.padding_mode != "zeros":
            _, _, padding, _ = self._as_2d()
            dx4 = ops.pad_backward(dx4, ((padding[0], padding[1]), (padding[2], padding[3])), _PADDING_MODES[self.padding_mode])
        return dx4 if self._nd == 2 else dx4.reshape(dx4.shape[0], dx4.shape[1], dx4.shape[3])

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * self._nd:
            s += f", padding={self.padding!r}"
        if self.dilation != (1,) * self._nd:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if not self.keep_col:
            s += ", keep_col=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return s


class Conv2D(_ConvNd):
    """2-d convolution (cross-correlation, as PyTorch's ``nn.Conv2d``).

    Args:
        in_channels, out_channels: C and O; both divisible by ``groups``.
        kernel_size, stride, dilation: an int or a pair (height, width).
        padding: an int, a pair, ``"valid"`` (none) or ``"same"`` (output size
            equals input size; stride 1 only; an odd total puts the extra row
            or column at the bottom/right, as PyTorch).
        groups: G; input and output channels split into G independent groups.
        bias: learn a per-channel bias.
        padding_mode: what the padding holds: ``"zeros"`` (the default),
            ``"reflect"`` (mirrored, edge not repeated; padding < size),
            ``"replicate"`` (the edge value) or ``"circular"`` (periodic;
            padding <= size), as PyTorch.  Non-zero modes pad the input
            explicitly (:mod:`lamina.ops.pad`) and backward folds the
            borders' gradients back onto the positions they copied.
        keep_col: where the convolution runs as im2col + GEMM (strided, or
            ``lamina.ops.cpu_conv("im2col")``), cache the im2col matrix for
            backward (the default: fastest, but KH·KW times the input's
            memory); False caches only the input and rebuilds col in
            backward (one more im2col per step, about KH·KW times less
            activation memory).  The direct and implicit-GEMM kernels always
            cache only the input.

    Shape:
        x: (N, C, H, W)  →  y: (N, O, OH, OW),
        OH = ⌊(H + pad_top + pad_bottom - dilation·(KH-1) - 1) / stride⌋ + 1 (OW likewise).

    Parameters:
        weight: (O, C/G, KH, KW); bias: (O,).  Initialised as PyTorch.

    Forward, with col = im2col(x) (C·KH·KW, N·OH·OW) and per group g:
        y_g = W_g col_g + b
    Backward:
        dW_g += dy_g col_gᵀ,   db += Σ_{n,oh,ow} dy,   dx = col2im(W_gᵀ dy_g)
    (The direct kernel computes the same sums from x without forming col:
    dx is the forward correlation of dy with W transposed and flipped.)
    """

    _nd = 2


class Conv1D(_ConvNd):
    """1-d convolution over sequences, PyTorch's ``nn.Conv1d``.

    Same arguments as :class:`Conv2D` with ints (or 1-tuples) for the kernel,
    stride, padding and dilation.  Shape: x (N, C, L) → y (N, O, OL).
    Parameters: weight (O, C/G, K), bias (O,).  Runs on Conv2D's machinery
    with a height-1 kernel.
    """

    _nd = 1


class _ConvTransposeNd(_ConvNd):
    """Shared by ConvTranspose1D and ConvTranspose2D.

    A transposed convolution is the adjoint of a convolution: its forward is
    the backward-data pass of the convolution ("the shadow") that maps its
    output shape back to its input shape with the same weight, kernel,
    stride, padding, dilation and groups, and its backward is that shadow's
    forward and backward-weight.  Nothing new to derive, and every kernel of
    the convolution (direct and im2col on the CPU, cuBLAS or implicit GEMM
    on the GPU) serves it.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, dtype=np.float32):
        name = type(self).__name__
        if isinstance(padding, str):
            raise ValueError(f"{name}: expected padding as an int or a tuple, received {padding!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                         groups=groups, bias=bias, dtype=dtype)
        self.output_padding = as_tuple(output_padding, self._nd, name, "output_padding", minimum=0)
        if any(op >= limit for op, limit in zip(self.output_padding, self._padding_limit())):
            raise ValueError(f"{name}: expected output_padding smaller than max(stride, dilation) "
                             f"{self._padding_limit()}, received {self.output_padding}")

    def _padding_limit(self):
        """PyTorch's bound, per dimension: output_padding < max(stride, dilation)."""
        return tuple(max(s, d) for s, d in zip(self.stride, self.dilation))

    def _weight_shape(self):  # PyTorch's layout: (in, out / groups, *kernel)
        return (self.in_channels, self.out_channels // self.groups, *self.kernel_size)

    def output_shape(self, input_shape, output_padding=None):
        """The spatial output size for an input's spatial size:
        (size - 1)·stride - 2·padding + dilation·(kernel - 1) + output_padding + 1."""
        pads = self.output_padding if output_padding is None else output_padding
        return tuple((i - 1) * s - 2 * p + d * (k - 1) + op + 1 for i, s, p, d, k, op in
                     zip(input_shape, self.stride, self.padding, self.dilation, self.kernel_size, pads))

    def _output_padding(self, x, output_size):
        """output_padding, or the one that gives ``output_size`` (PyTorch's
        ``forward(input, output_size)``: the last nd entries are spatial)."""
        if output_size is None:
            return self.output_padding
        spatial = tuple(int(v) for v in output_size)[-self._nd:]
        least = self.output_shape(x.shape[2:], (0,) * self._nd)
        pad = tuple(want - have for want, have in zip(spatial, least))
        # PyTorch bounds output_size by the stride alone, output_padding by max(stride, dilation)
        if len(spatial) != self._nd or any(not 0 <= p < s for p, s in zip(pad, self.stride)):
            most = tuple(have + s - 1 for have, s in zip(least, self.stride))
            raise ShapeError(f"{self._label()}: expected output_size between {least} and {most} for an input of "
                             f"shape {tuple(x.shape)}, received {tuple(output_size)}")
        return pad

    def forward(self, x, output_size=None):
        x = self._check_input(x, ndim=self._nd + 2, dim=[(1, self.in_channels, "in_channels")])
        out_spatial = self.output_shape(x.shape[2:], self._output_padding(x, output_size))
        if any(v < 1 for v in out_spatial):
            raise ShapeError(f"{self._label()}: expected an input large enough for an output of at least one "
                             f"element per dimension, received shape {tuple(x.shape)} (output size {out_spatial})")
        n = x.shape[0]
        x4 = x if self._nd == 2 else x.reshape(n, x.shape[1], 1, x.shape[2])
        shape4 = (n, self.out_channels, *((1,) + out_spatial if self._nd == 1 else out_spatial))
        kernel, stride, padding, dilation = self._as_2d()
        g = ops.geometry(shape4, kernel, stride, padding, dilation)  # the shadow convolution: y's shape -> x's
        # An output_padding of a stride or more (allowed when the dilation
        # exceeds the stride) adds whole windows the shadow would also
        # sweep; x covers only the first ones, and the rest of y gets the bias.
        assert g.oh >= x4.shape[2] and g.ow >= x4.shape[3], (g, x4.shape)
        g = g._replace(oh=x4.shape[2], ow=x4.shape[3])
        y4 = ops.conv2d_backward_data(x4, self._weight_2d(), g, self.groups)
        if self.bias is not None:
            y4 += self._compute(self.bias).reshape(1, -1, 1, 1)
        y = y4 if self._nd == 2 else y4.reshape(n, self.out_channels, out_spatial[0])
        self._save(x4, g, out=y)
        return y

    def _backward(self, dy, need_dx):
        x4, g = self._take_cache(dy)
        dy4 = self._compute_grad(dy).reshape(g.n, g.c, g.h, g.w)  # the shadow's input
        weight = self._weight_2d()
        dx4 = None
        if ops.col_free(dy4, weight, g):
            if need_dx:
                dx4 = ops.conv2d_forward_col_free(dy4, weight, None, g, self.groups)
            _, dweight, _ = ops.conv2d_backward_col_free(x4, dy4, weight, g, self.groups, need_dx=False, need_bias=False)
        else:  # one im2col of dy serves both: dx = W col, dW = x colᵀ
            if need_dx:
                dx4, col = ops.conv2d_forward(dy4, weight, None, g, self.groups, keep_col=True)
            else:
                col = ops.im2col(dy4, g, pooled=True)
            _, dweight, _ = ops.conv2d_backward(x4, col, weight, g, self.groups, need_dx=False)
        self.weight.accumulate(dweight.reshape(self.weight.shape), owned=True)
        if self.bias is not None:
            low = backend.is_low_precision(dy4.dtype)
            self.bias.accumulate(dy4.sum(axis=(0, 2, 3), dtype=np.float32 if low else None), owned=True)
        if dx4 is None:
            return None
        return dx4 if self._nd == 2 else dx4.reshape(g.n, self.in_channels, g.ow)

    def extra_repr(self):
        s = super().extra_repr()
        if self.output_padding != (0,) * self._nd:
            s += f", output_padding={self.output_padding}"
        return s


class ConvTranspose2D(_ConvTransposeNd):
    """2-d transposed convolution, PyTorch's ``nn.ConvTranspose2d`` (sometimes
    called a fractionally strided convolution or, wrongly, deconvolution):
    the upsampling layer of decoders, U-Nets and GAN generators.

    Args:
        in_channels, out_channels: C and O; both divisible by ``groups``.
        kernel_size, stride, padding, dilation: an int or a pair, as the
            convolution whose adjoint this is (``padding`` removes rows and
            columns from the output's borders).
        output_padding: extra rows/columns at the bottom/right of the output,
            to choose among the output sizes a stride allows; smaller than
            the stride.  Or pass ``output_size`` to forward.
        groups, bias: as Conv2D.

    Call: ``forward(x, output_size=None)``.

    Shape:
        x: (N, C, H, W) → y: (N, O, OH, OW),
        OH = (H - 1)·stride - 2·padding + dilation·(KH - 1) + output_padding + 1.

    Parameters (PyTorch's layout and initialisation):
        weight: (C, O/G, KH, KW); bias: (O,).

    With conv the convolution from (N, O, OH, OW) to (N, C, H, W) that has
    this weight (its "out_channels" are C):
        forward:   y = conv.backward_data(x) + b     = col2im(Wᵀ x) per group
        backward:  dx = conv.forward(dy) = W im2col(dy),  dW += x im2col(dy)ᵀ,
                   db += Σ_{n,oh,ow} dy
    """

    _nd = 2


class ConvTranspose1D(_ConvTransposeNd):
    """1-d transposed convolution, PyTorch's ``nn.ConvTranspose1d``: the
    arguments of :class:`ConvTranspose2D` with ints (or 1-tuples).
    Shape: x (N, C, L) → y (N, O, OL), OL = (L - 1)·stride - 2·padding +
    dilation·(K - 1) + output_padding + 1.  Parameters: weight (C, O/G, K),
    bias (O,)."""

    _nd = 1
