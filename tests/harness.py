"""The layer contract: one harness that every layer's test feeds.

A test supplies how to build the layer (and its PyTorch twin) and a list of
inputs; :func:`check_layer` then checks, for each input:

* gradcheck in float64 (input and parameter gradients),
* parity with PyTorch in float32: forward, dx and every parameter gradient,
  with the PyTorch weights loaded through ``load_state_dict`` (so the layout
  and the key names are checked too),
* a state_dict round trip and one SGD step that changes every parameter
  whose gradient is not exactly zero.
"""

import copy

import numpy as np

import lamina
from lamina import backend
from lamina.testing import gradcheck


def to_numpy(a):
    return backend.to_device(a, "cpu")


def random_inputs(shapes, rng, away_from=None, noncontiguous=True):
    """Random float64 inputs of the given shapes, then a non-contiguous view
    with the largest shape (every other element of the last dimension).

    ``away_from``: keep every element at least 1e-3 from this value, or
    these values (a kink, such as 0 for ReLU), so finite differences never
    straddle it.
    """
    out = [rng.standard_normal(shape) for shape in shapes]
    if noncontiguous:
        last = tuple(max(shapes, key=lambda s: (int(np.prod(s)), s[-1])))
        view = rng.standard_normal(last[:-1] + (2 * last[-1],))[..., ::2]
        assert view.shape == last and not view.flags.c_contiguous
        out.append(view)
    for kink in np.atleast_1d(away_from) if away_from is not None else ():
        for x in out:
            x[np.abs(x - kink) < 1e-3] += 2e-3
    return out


def check_layer(make, inputs, torch_make=None, torch=None, xp=np, rtol=1e-5, atol=1e-6, grad_atol=1e-5):
    """Run the contract on every input.  ``make()`` builds a float32 lamina
    layer; ``torch_make(layer)`` builds the PyTorch twin (weights are copied
    from PyTorch into lamina, not the other way round)."""
    for x in inputs:
        layer = make()
        assert gradcheck(layer, x)
        if torch_make is not None:
            check_torch_parity(layer, x, torch_make, torch, xp, rtol, atol, grad_atol)
        check_state_round_trip(make, layer, x, xp)


def check_torch_parity(layer, x, torch_make, torch, xp, rtol, atol, grad_atol):
    tlayer = torch_make()
    tlayer.train(layer.training)
    layer.load_state_dict(tlayer.state_dict())  # PyTorch tensors load one to one
    layer.to(backend.CPU if xp is np else "cuda")
    x32 = x.astype(np.float32)
    dy = np.random.default_rng(7).standard_normal(tlayer(torch.from_numpy(x32.copy())).shape).astype(np.float32)

    tx = torch.from_numpy(np.ascontiguousarray(x32)).requires_grad_(True)
    ty = tlayer(tx)
    ty.backward(torch.from_numpy(dy))

    layer.zero_grad(set_to_none=True)
    y = layer(xp.asarray(x32))
    dx = layer.backward(xp.asarray(dy))
    np.testing.assert_allclose(to_numpy(y), ty.detach().numpy(), rtol=rtol, atol=atol, err_msg=f"{layer}: forward")
    np.testing.assert_allclose(to_numpy(dx), tx.grad.numpy(), rtol=rtol, atol=grad_atol, err_msg=f"{layer}: dx")
    assert y.dtype == np.float32 and dx.dtype == np.float32
    tparams = dict(tlayer.named_parameters())
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(
            to_numpy(p.grad), tparams[name].grad.numpy(), rtol=rtol, atol=grad_atol, err_msg=f"{layer}: grad of {name}"
        )
    assert set(tparams) == {n for n, _ in layer.named_parameters()}


def check_state_round_trip(make, layer, x, xp):
    """state_dict → fresh layer gives the same output; one SGD step moves every parameter."""
    layer = copy.deepcopy(layer).to(backend.CPU if xp is np else "cuda", dtype=np.float32)
    x32 = xp.asarray(x.astype(np.float32))
    twin = make().to(backend.CPU if xp is np else "cuda")
    twin.load_state_dict({k: to_numpy(v) for k, v in layer.state_dict().items()})
    layer.eval(), twin.eval()
    with lamina.no_grad():
        np.testing.assert_array_equal(to_numpy(layer(x32)), to_numpy(twin(x32)))
    params = list(layer.parameters())
    if not params:
        return
    layer.train()
    before = [to_numpy(p.data).copy() for p in params]
    y = layer(x32)
    layer.zero_grad()
    # a random dy: with ones, sum(dy * xhat) = 0 would leave BatchNorm's gamma still
    layer.backward(xp.asarray(np.random.default_rng(3).standard_normal(y.shape).astype(np.float32)))
    lamina.optim.SGD(params, lr=0.1).step()
    moved = 0
    for b, p in zip(before, params):
        if not to_numpy(p.grad).any():
            continue  # a gradient that is exactly 0 (W_hh of a recurrent layer over one step from h0 = 0; parity checked it)
        assert not np.array_equal(b, to_numpy(p.data)), "an SGD step left a parameter unchanged"
        moved += 1
    assert moved, "an SGD step moved no parameter"


def check_gpu_kernels_match_cpu(make, x, dy=None, kernels="lamina", rtol=1e-4, atol=1e-5, grad_atol=1e-5):
    """Build ``make()`` twice with one state, run one copy on the CPU and one
    on the GPU with ``lamina.backend.use_kernels(kernels)``, and compare the
    output, dx and every parameter gradient.  ``dy`` defaults to a random
    gradient of the output's shape."""
    import cupy as cp

    lamina.manual_seed(0)
    cpu, gpu = make(), make()
    gpu.load_state_dict(cpu.state_dict())
    gpu.to("cuda")
    y_cpu = cpu(x)
    if dy is None:
        dy = np.random.default_rng(1).standard_normal(y_cpu.shape).astype(np.float32)
    previous = backend.use_kernels(kernels)
    try:
        y = gpu(cp.asarray(x))
        dx = gpu.backward(cp.asarray(dy))
    finally:
        backend.use_kernels(previous)
    np.testing.assert_allclose(to_numpy(y), y_cpu, rtol=rtol, atol=atol)
    np.testing.assert_allclose(to_numpy(dx), cpu.backward(dy), rtol=rtol, atol=atol)
    for (name, p), q in zip(cpu.named_parameters(), gpu.parameters()):
        np.testing.assert_allclose(to_numpy(q.grad), p.grad, rtol=rtol, atol=grad_atol, err_msg=name)


def assert_same_step(a, b, x, seed):
    """Models ``a`` and ``b`` (one of them checkpointed, say) give bit-identical
    outputs, input gradients and parameter gradients for one forward and
    backward from the same random state.  Returns a's output."""
    results = []
    for model in (a, b):
        lamina.manual_seed(seed)
        y = model(x)
        results.append((y, model.backward(np.ones_like(y))))
    (y1, dx1), (y2, dx2) = results
    assert np.array_equal(y1, y2) and np.array_equal(dx1, dx2)
    for p, q in zip(a.parameters(), b.parameters()):
        assert np.array_equal(p.grad, q.grad)
    return y1
