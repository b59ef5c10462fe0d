"""Forward and backward hooks (lamina.hooks): what each hook sees and what
a hook's return value replaces, against PyTorch's hooks on the same model
with the same weights; removal, ordering, and the cases without a PyTorch
counterpart (backward_parameters, super() calls, Checkpoint)."""

import numpy as np
import pytest
from harness import to_numpy as _to_numpy

import lamina as lm
from lamina.hooks import RemovableHandle

TOL = dict(rtol=1e-5, atol=1e-6)


def to_numpy(a):
    """A lamina (NumPy or CuPy) array or a torch tensor, as a NumPy array."""
    return a.detach().numpy() if hasattr(a, "detach") else _to_numpy(a)


def _pair(torch, xp):
    """A small CNN in lamina and PyTorch with the same weights, and an
    input and output gradient (odd sizes, batch 3)."""
    model = lm.Sequential(lm.Conv2D(2, 4, 3, padding=1), lm.ReLU(), lm.MaxPool2D(2), lm.Flatten(), lm.Dense(4 * 3 * 2, 5))
    ref = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(4 * 3 * 2, 5))
    model.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    model.to("cpu" if xp is np else "cuda")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 7, 5)).astype(np.float32)
    dy = rng.standard_normal((3, 5)).astype(np.float32)
    return model, ref, x, dy


def _run_torch(torch, ref, x, dy, input_grad=True):
    xt = torch.tensor(x, requires_grad=input_grad)
    yt = ref(xt)
    yt.backward(torch.tensor(dy))
    return yt.detach().numpy()


def _record(store, name):
    def forward(layer, args, output):
        store.append(("forward", name, to_numpy(args[0]), to_numpy(output)))

    def backward(layer, grad_input, grad_output):
        store.append(("backward", name, [None if g is None else to_numpy(g) for g in grad_input],
                      [to_numpy(g) for g in grad_output]))
    return forward, backward


def _assert_same_records(ours, theirs):
    assert [r[:2] for r in ours] == [r[:2] for r in theirs]
    for a, b in zip(ours, theirs):
        for u, v in zip(a[2:], b[2:]):
            if isinstance(u, list):
                assert len(u) == len(v)
                for p, q in zip(u, v):
                    assert (p is None) == (q is None), a[:2]
                    if p is not None:
                        np.testing.assert_allclose(p, q, **TOL)
            else:
                np.testing.assert_allclose(u, v, **TOL)


# PyTorch says that its backward hook on the first layer fires for an input without grad: what we compare
@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
@pytest.mark.parametrize("method", ["backward", "backward_parameters"])
def test_hooks_see_what_pytorchs_hooks_see(torch, xp, method):
    """Every layer's input and output in forward, and its grad_input and
    grad_output in backward, in PyTorch's order.  backward_parameters
    computes no input gradient for the first layer: (None,), as PyTorch
    gives for an input that does not require grad."""
    model, ref, x, dy = _pair(torch, xp)
    ours, theirs = [], []
    for (name, layer), (_, module) in zip(model.named_children(), ref.named_children()):
        for store, target in ((ours, layer), (theirs, module)):
            fwd, bwd = _record(store, name)
            target.register_forward_hook(fwd)
            target.register_full_backward_hook(bwd)
    y = model(xp.asarray(x))
    getattr(model, method)(xp.asarray(dy))
    _run_torch(torch, ref, x, dy, input_grad=method == "backward")
    _assert_same_records(ours, theirs)
    assert [r[1] for r in ours if r[0] == "backward"] == ["4", "3", "2", "1", "0"]
    np.testing.assert_allclose(to_numpy(y), ours[-6][3], **TOL)  # the last forward record is the output


def test_hook_on_the_whole_model(torch, xp):
    model, ref, x, dy = _pair(torch, xp)
    ours, theirs = [], []
    for store, target in ((ours, model), (theirs, ref)):
        fwd, bwd = _record(store, "model")
        target.register_forward_hook(fwd)
        target.register_full_backward_hook(bwd)
    model(xp.asarray(x))
    model.backward(xp.asarray(dy))
    _run_torch(torch, ref, x, dy)
    _assert_same_records(ours, theirs)


def _grads(model):
    return {k: to_numpy(p.grad) for k, p in model.named_parameters()}


def _assert_same_grads(model, ref):
    for k, p in ref.named_parameters():
        np.testing.assert_allclose(_grads(model)[k], p.grad.numpy(), rtol=1e-5, atol=1e-5, err_msg=k)


def test_replacements_change_what_flows_on_as_in_pytorch(torch, xp):
    """A pre-hook's new input, a backward pre-hook's new grad_output and a
    backward hook's new grad_input: the output and every parameter gradient
    equal PyTorch's with the same hooks."""
    model, ref, x, dy = _pair(torch, xp)
    for m in (model, ref):
        m[0].register_forward_pre_hook(lambda layer, args: args[0] * 0.5)
        m[4].register_full_backward_pre_hook(lambda layer, go: (go[0] * 3.0,))
        # keep only the positive part of the gradient reaching the pooling layer
        m[3].register_full_backward_hook(lambda layer, gi, go: (gi[0] * (gi[0] > 0),))
    y = model(xp.asarray(x))
    model.backward(xp.asarray(dy))
    yt = _run_torch(torch, ref, x, dy)
    np.testing.assert_allclose(to_numpy(y), yt, **TOL)
    _assert_same_grads(model, ref)


def test_a_replaced_output_is_passed_through_by_backward(torch, xp):
    """No tape differentiates a forward hook: backward treats it as the
    identity.  The documented recipe, a backward pre-hook applying the
    hook's derivative, then gives PyTorch's gradients."""
    model, ref, x, dy = _pair(torch, xp)
    model[1].register_forward_hook(lambda layer, args, y: y * 2.0 + 1.0)
    ref[1].register_forward_hook(lambda module, args, y: y * 2.0 + 1.0)
    y = model(xp.asarray(x))
    np.testing.assert_allclose(to_numpy(y), _run_torch(torch, ref, x, dy), **TOL)
    model.backward(xp.asarray(dy))
    assert not np.allclose(_grads(model)["0.weight"], ref[0].weight.grad.numpy(), rtol=1e-3)

    model.zero_grad()
    model[1].register_full_backward_pre_hook(lambda layer, go: (go[0] * 2.0,))  # d(2y + 1)/dy
    model(xp.asarray(x))
    model.backward(xp.asarray(dy))
    _assert_same_grads(model, ref)


def test_removal_ordering_and_context_manager():
    layer = lm.ReLU()
    calls = []
    h1 = layer.register_forward_hook(lambda m, a, y: calls.append(1))
    h2 = layer.register_forward_hook(lambda m, a, y: calls.append(2))
    h0 = layer.register_forward_hook(lambda m, a, y: calls.append(0), prepend=True)
    x = np.ones((2, 3), np.float32)
    layer(x)
    assert calls == [0, 1, 2]
    h1.remove()
    h1.remove()  # twice is harmless
    calls.clear()
    layer(x)
    assert calls == [0, 2]
    with layer.register_forward_pre_hook(lambda m, a: calls.append("pre")) as h3:
        assert isinstance(h3, RemovableHandle)
        calls.clear()
        layer(x)
        assert calls == ["pre", 0, 2]
    h0.remove()
    h2.remove()
    assert "_hooks" not in layer.__dict__  # back on the hook-free path
    calls.clear()
    layer(x)
    layer.forward(x)  # forward called directly fires no hook, as in PyTorch
    assert calls == []


def test_with_kwargs_and_always_call():
    seen = []
    attn = lm.MultiheadAttention(8, 2)
    x = np.random.default_rng(0).standard_normal((2, 3, 8)).astype(np.float32)

    def pre(layer, args, kwargs):
        seen.append(sorted(kwargs))
        return args, {**kwargs, "need_weights": True}

    attn.register_forward_pre_hook(pre, with_kwargs=True)
    attn.register_forward_hook(lambda layer, args, kwargs, out: seen.append(kwargs["need_weights"]), with_kwargs=True)
    out = attn(x, x, x, need_weights=False)
    assert seen == [["need_weights"], True]
    assert isinstance(out, tuple) and out[1] is not None  # the pre-hook's keyword reached forward

    dense = lm.Dense(4, 2)
    failed = []
    dense.register_forward_hook(lambda layer, args, out: failed.append(("always", out)), always_call=True)
    dense.register_forward_hook(lambda layer, args, out: failed.append("normal"))
    with pytest.raises(lm.ShapeError, match="Dense"):
        dense(np.ones((3, 5), np.float32))
    assert failed == [("always", None)]


def test_bad_replacements_name_the_layer_and_leave_the_cache():
    dense = lm.Dense(4, 2)
    x = np.ones((3, 4), np.float32)
    dense(x)
    h = dense.register_full_backward_pre_hook(lambda layer, go: (go[0], go[0]))
    with pytest.raises(ValueError, match=r"Dense\(.*returned 2 value\(s\) for grad_output, expected 1"):
        dense.backward(np.ones((3, 2), np.float32))
    h.remove()
    assert dense.has_cache() and dense.weight.grad is None
    h = dense.register_full_backward_pre_hook(lambda layer, go: go[0][:, :1])
    with pytest.raises(ValueError, match=r"grad_output\[0\] of shape \(3, 1\), expected \(3, 2\)"):
        dense.backward(np.ones((3, 2), np.float32))
    h.remove()
    assert dense.has_cache()
    dense.register_full_backward_hook(lambda layer, gi, go: (gi[0][1:],))
    with pytest.raises(ValueError, match=r"grad_input\[0\] of shape \(2, 4\), expected \(3, 4\)"):
        dense.backward(np.ones((3, 2), np.float32))
    with pytest.raises(TypeError, match="callable"):
        dense.register_forward_hook("not a function")


def test_hooks_fire_once_per_outermost_backward():
    """A subclass that calls super().backward, and the default
    backward_parameters that calls backward, fire each hook once."""

    class Scaled(lm.Dense):
        def backward(self, dy):
            return super().backward(dy * 2.0)

    counts = {"pre": 0, "post": 0}
    layer = Scaled(3, 2)
    layer.register_full_backward_pre_hook(lambda m, go: counts.__setitem__("pre", counts["pre"] + 1))
    layer.register_full_backward_hook(lambda m, gi, go: counts.__setitem__("post", counts["post"] + 1))
    x = np.ones((2, 3), np.float32)
    for method in ("backward", "backward_parameters"):
        layer(x)
        getattr(layer, method)(np.ones((2, 2), np.float32))
    tanh = lm.Tanh()  # no backward_parameters of its own: the default runs backward
    grads = []
    tanh.register_full_backward_hook(lambda m, gi, go: grads.append(gi))
    tanh(x)
    tanh.backward_parameters(np.ones((2, 3), np.float32))
    assert counts == {"pre": 2, "post": 2}
    assert grads == [(None,)]


def test_recurrent_grad_output_holds_the_state_gradient():
    lstm = lm.LSTM(3, 4, return_state=True)
    seen = []
    lstm.register_full_backward_pre_hook(lambda m, go: seen.append(tuple(None if g is None else type(g) for g in go)))
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    y, _ = lstm(x)
    lstm.backward(np.ones_like(y))
    assert seen == [(np.ndarray, None)]


def test_checkpoint_recompute_fires_forward_hooks_again():
    """As with torch.utils.checkpoint: the recomputed forward calls the
    segment's layers again; lamina.is_recomputing() tells a hook which
    call it is in."""
    model = lm.Sequential(lm.Dense(4, 4), lm.ReLU(), lm.Dense(4, 2), checkpoint_segments=2)
    seen = []
    model[0].register_forward_hook(lambda m, a, y: seen.append(lm.is_recomputing()))
    y = model(np.ones((2, 4), np.float32))
    model.backward(np.ones_like(y))
    assert seen == [False, True]


def test_summary_fires_no_hook():
    model = lm.Sequential(lm.Dense(4, 3), lm.ReLU())
    seen = []
    model[0].register_forward_hook(lambda m, a, y: seen.append(y))
    model.summary((2, 4), print_fn=lambda s: None)
    assert seen == []
    model(np.ones((2, 4), np.float32))
    assert len(seen) == 1  # restored after the summary
