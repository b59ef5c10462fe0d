"""The Layer API: registration, traversal, state_dict, devices and dtypes,
train/eval, no_grad, gradient accumulation, summary, seeding."""

from collections import OrderedDict

import numpy as np
import pytest

import lamina as lm


def mlp():
    return lm.Sequential(lm.Dense(4, 8), lm.ReLU(), lm.Dropout(0.1), lm.Dense(8, 3))


def test_named_parameters_use_pytorch_names_and_layouts(torch):
    model = mlp()
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "3.weight", "3.bias"]
    tmodel = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(8, 3))
    assert list(model.state_dict()) == list(tmodel.state_dict())
    for (n, p), (tn, tp) in zip(model.named_parameters(), tmodel.named_parameters()):
        assert n == tn and p.shape == tuple(tp.shape)
    assert len(list(model.children())) == 4 and [n for n, _ in model.named_children()] == ["0", "1", "2", "3"]
    assert model.num_parameters() == sum(p.numel() for p in tmodel.parameters())


def test_pytorch_state_dict_loads_one_to_one(torch):
    tmodel = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(8, 3))
    model = mlp()
    # as NumPy arrays (float32 and float64 alike) ...
    model.load_state_dict({k: v.numpy().astype(np.float64) for k, v in tmodel.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    model.eval(), tmodel.eval()
    with torch.no_grad():
        expected = tmodel(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(x), expected, rtol=1e-6, atol=1e-6)
    assert model[0].weight.dtype == np.float32  # cast to the parameter's dtype
    # ... and as tensors
    model2 = mlp().eval()
    model2.load_state_dict(tmodel.state_dict())
    np.testing.assert_allclose(model2(x), expected, rtol=1e-6, atol=1e-6)


def _snapshot(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def test_load_state_dict_validates_everything_before_changing_anything():
    model = mlp()
    good = {k: np.zeros_like(v) for k, v in model.state_dict().items()}
    before = _snapshot(model)

    bad_shape = OrderedDict(good)
    bad_shape["3.weight"] = np.zeros((3, 9), dtype=np.float32)  # last key: the others were already seen
    with pytest.raises(lm.ShapeError, match=r"'3.weight' of shape \(3, 8\), received \(3, 9\)"):
        model.load_state_dict(bad_shape)
    missing = dict(good)
    del missing["0.bias"]
    with pytest.raises(lm.StateDictError, match=r"missing keys \['0.bias'\]"):
        model.load_state_dict(missing)
    with pytest.raises(lm.StateDictError, match=r"unexpected keys \['extra'\]"):
        model.load_state_dict({**good, "extra": np.zeros(1)})
    with pytest.raises(lm.DTypeError, match="numeric array for '0.bias'"):
        model.load_state_dict({**good, "0.bias": np.array(["a"] * 8)})
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])

    result = model.load_state_dict({**missing, "extra": np.zeros(1)}, strict=False)
    assert result.missing_keys == ["0.bias"] and result.unexpected_keys == ["extra"]  # PyTorch's named pair
    missing_keys, unexpected = result
    assert (missing_keys, unexpected) == (["0.bias"], ["extra"])
    assert model.load_state_dict(model.state_dict()) == ([], [])
    np.testing.assert_array_equal(model[0].weight.data, 0)
    np.testing.assert_array_equal(model[0].bias.data, before["0.bias"])


def test_load_state_dict_copies_its_input():
    model = lm.Dense(2, 2)
    sd = {k: np.ones_like(v) for k, v in model.state_dict().items()}
    model.load_state_dict(sd)
    sd["weight"][...] = 5
    np.testing.assert_array_equal(model.weight.data, 1)


def test_to_dtype_casts_parameters_and_grads():
    model = mlp()
    x = np.ones((2, 4), dtype=np.float32)
    model.backward(np.ones_like(model(x)))
    model.to(dtype=np.float64)
    assert all(p.dtype == np.float64 and p.grad.dtype == np.float64 for p in model.parameters())
    assert model.dtype == np.float64 and model(np.ones((2, 4))).dtype == np.float64
    model.to(np.float32)  # the dtype may be given positionally too
    assert model.dtype == np.float32
    with pytest.raises(lm.DTypeError, match="floating-point dtype, received int32"):
        model.to(dtype=np.int32)


def test_to_cuda_without_gpu_says_why(monkeypatch):
    from lamina import backend

    if lm.cuda_available():
        pytest.skip("a GPU is present")
    model = mlp()
    with pytest.raises(lm.DeviceError, match="CUDA device requested"):
        model.to("cuda")
    assert model.device == "cpu" and all(isinstance(p.data, np.ndarray) for p in model.parameters())
    with pytest.raises(ValueError, match="expected a device"):
        model.to("tpu")
    assert backend.Device("cuda:1").index == 1 and str(backend.Device("CUDA")) == "cuda:0"


def test_train_eval_propagate():
    model = mlp()
    assert all(m.training for m in model.modules())
    model.eval()
    assert not any(m.training for m in model.modules())
    x = np.ones((3, 4), dtype=np.float32)
    np.testing.assert_array_equal(model(x), model(x))  # dropout off
    model.train()
    assert all(m.training for m in model.modules())


def test_gradients_accumulate_until_zero_grad():
    layer = lm.Dense(3, 2)
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    layer(x)
    layer.backward(np.ones((4, 2), dtype=np.float32))
    once = layer.weight.grad.copy()
    layer(x)
    layer.backward(np.ones((4, 2), dtype=np.float32))
    np.testing.assert_allclose(layer.weight.grad, 2 * once, rtol=1e-6)
    kept = layer.weight.grad
    layer.zero_grad(set_to_none=False)
    assert layer.weight.grad is kept
    np.testing.assert_array_equal(layer.weight.grad, 0)
    layer.zero_grad()  # PyTorch's default: set_to_none=True
    assert layer.weight.grad is None


def _arrays(obj, depth=0):
    """Every NumPy array reachable from obj through dicts, lists and tuples."""
    if isinstance(obj, np.ndarray):
        yield obj
    elif depth < 6 and isinstance(obj, dict):
        for v in obj.values():
            yield from _arrays(v, depth + 1)
    elif depth < 6 and isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _arrays(v, depth + 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["cnn", "transformer"])
def test_fresh_gradients_are_kept_without_a_copy_and_alias_nothing(kind, dtype):
    """After zero_grad(), backward hands each layer's freshly computed
    gradient to its parameter (Parameter.accumulate(owned=True)) instead of
    copying it.  That is only right if no gradient shares memory with
    anything else: another gradient, a parameter, a layer's cache or
    workspace, or the gradient of the step before."""
    lm.manual_seed(0)
    rng = np.random.default_rng(1)
    if kind == "cnn":  # the direct kernel (3x3 stride 1) and im2col (stride 2), BatchNorm, a fused Dense
        model = lm.Sequential(lm.Conv2D(3, 8, 3, padding=1), lm.BatchNorm2d(8), lm.ReLU(), lm.Conv2D(8, 4, 3, stride=2),
                              lm.Flatten(), lm.Dense(36, 6, activation="relu"), lm.Dense(6, 3))
        shape = (5, 3, 8, 8)
    else:
        model = lm.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0)
        shape = (3, 5, 8)
    model.to(dtype=dtype)
    params = list(model.parameters())

    def step():
        model.zero_grad()
        y = model(rng.standard_normal(shape).astype(dtype))
        model.backward(rng.standard_normal(y.shape).astype(dtype))
        return [p.grad for p in params]

    first = step()
    values = [g.copy() for g in first]
    second = step()
    for g, p in zip(second, params):
        assert g.dtype == p.dtype and g.shape == p.shape
    for g1, v1, g2 in zip(first, values, second):
        assert g2 is not g1
        np.testing.assert_array_equal(g1, v1)  # the second backward wrote nothing into the first step's gradients
    others = [p.data for p in params] + [a for m in model.modules() for a in _arrays(vars(m))]
    for i, g in enumerate(second):
        for j, h in enumerate(second):
            assert i == j or not np.shares_memory(g, h)
        for a in others:
            assert not np.shares_memory(g, a)


def test_requires_grad_false_freezes_a_parameter():
    layer = lm.Dense(3, 2)
    layer.bias.requires_grad = False
    layer(np.ones((1, 3), dtype=np.float32))
    layer.backward(np.ones((1, 2), dtype=np.float32))
    assert layer.bias.grad is None and layer.weight.grad is not None
    before = layer.bias.data.copy()
    lm.optim.SGD(layer.parameters(), lr=1.0).step()
    np.testing.assert_array_equal(layer.bias.data, before)
    assert layer.num_parameters(trainable_only=True) == 6


def test_no_grad_caches_nothing():
    model = mlp()
    x = np.ones((2, 4), dtype=np.float32)
    with lm.no_grad():
        assert not lm.is_grad_enabled()
        model(x)
    assert lm.is_grad_enabled()
    assert not any(m.has_cache() for m in model.modules())
    with pytest.raises(lm.CacheError, match="Dense.*backward"):
        model.backward(np.ones((2, 3), dtype=np.float32))

    @lm.no_grad()
    def infer(x):
        return model(x)

    infer(x)
    assert not any(m.has_cache() for m in model.modules())


def test_clear_cache_drops_every_cache():
    model = mlp()
    model(np.ones((2, 4), dtype=np.float32))
    assert any(m.has_cache() for m in model.modules())
    model.clear_cache()
    assert not any(m.has_cache() for m in model.modules())


def test_custom_layer_with_buffer_and_children():
    class Scale(lm.Layer):
        """y = s·x + shift, with a learnable s and a fixed (buffer) shift."""

        def __init__(self, n):
            super().__init__()
            self.s = lm.Parameter(np.ones(n, dtype=np.float32))
            self.register_buffer("shift", np.zeros(n, dtype=np.float32))

        def forward(self, x):
            self._check_input(x, dim=[(-1, self.s.shape[0], "features")])
            self._save(x, out=x)
            return x * self.s.data + self.shift

        def backward(self, dy):
            x = self._take_cache(dy)
            self.s.accumulate((dy * x).sum(axis=0))
            return dy * self.s.data

    class Net(lm.Layer):
        def __init__(self):
            super().__init__()
            self.body = lm.Sequential(lm.Dense(3, 4), lm.Tanh())
            self.scale = Scale(4)

        def forward(self, x):
            return self.scale(self.body(x))

        def backward(self, dy):
            return self.body.backward(self.scale.backward(dy))

    net = Net()
    assert list(net.state_dict()) == ["body.0.weight", "body.0.bias", "scale.s", "scale.shift"]
    assert [n for n, _ in net.named_parameters()] == ["body.0.weight", "body.0.bias", "scale.s"]
    net.scale.shift = np.full(4, 0.5, dtype=np.float32)  # reassigning keeps it a buffer
    assert "scale.shift" in net.state_dict()
    assert lm.testing.gradcheck(net, np.random.default_rng(0).standard_normal((5, 3)))


def test_summary_lists_layers_shapes_and_counts():
    model = mlp()
    text = model.summary(input_shape=(2, 4), print_fn=None)
    assert "(2, 8)" in text and "(2, 3)" in text and "Dense" in text and "Dropout" in text
    assert "parameters: 67 (trainable 67)" in text
    assert model.training and not any(m.has_cache() for m in model.modules())
    assert "forward" not in vars(model[0])  # the tracing wrappers are gone


def test_repr_nests():
    r = repr(mlp())
    assert r.startswith("Sequential(") and "(0): Dense(in_features=4, out_features=8, bias=True)" in r
    assert "(2): Dropout(p=0.1)" in r


def test_manual_seed_makes_runs_identical():
    def run():
        lm.manual_seed(42)
        model = mlp()
        opt = lm.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)
        y = np.arange(16) % 3
        fn = lm.SoftmaxCrossEntropy()
        for _ in range(5):
            fn(model(x), y)
            opt.zero_grad()
            model.backward(fn.backward())
            opt.step()
        return _snapshot(model)

    a, b = run(), run()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    lm.manual_seed(43)
    assert not np.array_equal(mlp()[0].weight.data, a["0.weight"])


def test_layer_without_super_init_is_a_clear_error():
    class Broken(lm.Layer):
        def __init__(self):
            self.w = 1

    with pytest.raises(AttributeError, match="must call super"):
        Broken()


def test_import_does_not_touch_cupy_or_torch():
    import subprocess
    import sys

    code = "import sys, lamina; lamina.Dense(2, 2); print(sorted(m for m in ('cupy', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


class _Blocks(lm.Layer):
    """A model that holds its layers in a LayerList and a LayerDict, as a
    PyTorch model holds them in nn.ModuleList and nn.ModuleDict."""

    def __init__(self):
        super().__init__()
        self.blocks = lm.LayerList([lm.Dense(4, 4, activation="relu") for _ in range(3)])
        self.heads = lm.LayerDict({"score": lm.Dense(4, 2), "value": lm.Dense(4, 1)})

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.heads["score"](x), self.heads["value"](x)

    def backward(self, dys):
        dscore, dvalue = dys
        dy = self.heads["score"].backward(dscore) + self.heads["value"].backward(dvalue)
        for block in reversed(self.blocks):
            dy = block.backward(dy)
        return dy


def test_layer_list_and_dict_register_their_layers_under_pytorch_names(torch):
    class TorchBlocks(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()) for _ in range(3)])
            self.heads = torch.nn.ModuleDict({"score": torch.nn.Linear(4, 2), "value": torch.nn.Linear(4, 1)})

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            return self.heads["score"](x), self.heads["value"](x)

    t, model = TorchBlocks(), _Blocks()
    tsd = {k.replace(".0.", "."): v.numpy() for k, v in t.state_dict().items()}  # Linear+ReLU is one fused Dense
    assert list(model.state_dict()) == list(tsd) and len(list(model.parameters())) == 10
    model.load_state_dict(tsd)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    dscore, dvalue = rng.standard_normal((5, 2)).astype(np.float32), rng.standard_normal((5, 1)).astype(np.float32)
    tx = torch.from_numpy(x).requires_grad_()
    ts, tv = t(tx)
    ((ts * torch.from_numpy(dscore)).sum() + (tv * torch.from_numpy(dvalue)).sum()).backward()
    score, value = model(x)
    np.testing.assert_allclose(score, ts.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.backward((dscore, dvalue)), tx.grad.numpy(), rtol=1e-5, atol=1e-6)
    tgrads = {k.replace(".0.", "."): p.grad.numpy() for k, p in t.named_parameters()}
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, tgrads[name], rtol=1e-5, atol=1e-6, err_msg=name)
    model.to(dtype=np.float64)
    assert all(p.data.dtype == np.float64 for p in model.parameters())
    model.eval()
    assert not any(m.training for m in model.modules())


def test_layer_list_edits_renumber_as_pytorch_does(torch):
    a, b, c, d = (lm.Dense(2, 2) for _ in range(4))
    layers = lm.LayerList([a, b])
    layers.append(c).extend([d])
    layers.insert(1, lm.ReLU())
    assert [name for name, _ in layers.named_children()] == ["0", "1", "2", "3", "4"]
    assert layers[0] is a and isinstance(layers[1], lm.ReLU) and layers[-1] is d and len(layers) == 5
    del layers[1]
    assert list(layers) == [a, b, c, d] and list(reversed(layers)) == [d, c, b, a]
    assert list(layers[1:3]) == [b, c] and isinstance(layers[1:3], lm.LayerList)
    layers[2] = e = lm.Dense(2, 2)
    assert layers[2] is e and list(layers.state_dict())[4:6] == ["2.weight", "2.bias"]
    del layers[::2]
    assert list(layers) == [b, d] and list(layers.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    tl = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(4)])
    del tl[::2]
    assert list(tl.state_dict()) == list(layers.state_dict())


def test_layer_containers_reject_what_they_cannot_hold_and_have_no_forward():
    layers, heads = lm.LayerList(), lm.LayerDict()
    with pytest.raises(TypeError, match="LayerList: expected a Layer, received list"):
        layers.append([lm.ReLU()])
    with pytest.raises(IndexError, match="LayerList: index 0 out of range for 0 layers"):
        layers[0]
    with pytest.raises(KeyError, match=r"LayerDict: expected a name as a non-empty string without '\.', received 'a\.b'"):
        heads["a.b"] = lm.ReLU()
    with pytest.raises(TypeError, match="LayerDict: expected a Layer, received int"):
        heads["a"] = 3
    heads.update([("keys", lm.ReLU()), ("b", lm.Tanh())])
    assert "keys" in heads and list(heads.keys()) == ["keys", "b"]  # a layer named like a method leaves the method alone
    assert isinstance(heads.pop("keys"), lm.ReLU) and list(heads) == ["b"] and len(heads) == 1
    with pytest.raises(NotImplementedError, match="LayerList holds layers and has no forward"):
        lm.LayerList([lm.ReLU()])(np.zeros(3))
    with pytest.raises(NotImplementedError, match="LayerDict holds layers and has no forward"):
        heads.backward(np.zeros(3))


def test_pytorch_module_helpers_apply_requires_grad_and_paths():
    """apply(), requires_grad_(), add_module(), register_parameter(),
    get_submodule(), get_parameter() and buffers() behave as PyTorch's."""
    model = lm.Sequential(lm.Dense(3, 4), lm.ReLU(), lm.Sequential(lm.Dense(4, 4), lm.BatchNorm1d(4)), lm.Dense(4, 2))
    seen = []
    model.apply(lambda m: seen.append(type(m).__name__))
    assert seen == ["Dense", "ReLU", "Dense", "BatchNorm1d", "Sequential", "Dense", "Sequential"]  # children first

    def init_dense(m):
        if isinstance(m, lm.Dense):
            lm.init.zeros_(m.bias)
            m.weight.data[...] = 0.5

    assert model.apply(init_dense) is model
    assert all((p.data == 0.5).all() for n, p in model.named_parameters() if n.endswith("weight") and p.data.ndim == 2)
    assert model.get_submodule("2.1") is model[2][1] and model.get_submodule("") is model
    assert model.get_parameter("2.0.bias") is model[2][0].bias
    with pytest.raises(AttributeError, match=r"Sequential: 2 has no child '5' \(looking for '2\.5'\); its children: \['0', '1'\]"):
        model.get_submodule("2.5")
    with pytest.raises(AttributeError, match=r"1 has no parameter 'weight' \(looking for '1\.weight'\)"):
        model.get_parameter("1.weight")
    assert [b.shape for b in model.buffers()] == [(4,), (4,), ()]  # running mean, var, num_batches_tracked

    model[0].requires_grad_(False)  # freeze the first layer, as for fine-tuning
    assert model.num_parameters(trainable_only=True) == model.num_parameters() - 16
    x = np.ones((5, 3), dtype=np.float32)
    model.backward(np.ones_like(model(x)[:, :2]))
    assert model[0].weight.grad is None and model[0].bias.grad is None and model[3].weight.grad is not None
    assert model.requires_grad_() is model and all(p.requires_grad for p in model.parameters())

    holder = lm.Sequential()
    holder.add_module("head", lm.Dense(2, 2))
    holder.register_parameter("scale", lm.Parameter(np.ones(1, dtype=np.float32)))
    assert list(holder.state_dict()) == ["scale", "head.weight", "head.bias"]  # own parameters first, as PyTorch
    with pytest.raises(KeyError, match=r"expected a child name as a non-empty string without '\.', received 'a\.b'"):
        holder.add_module("a.b", lm.ReLU())
    with pytest.raises(KeyError, match="child name 'forward' would hide the attribute of that name"):
        holder.add_module("forward", lm.ReLU())
    with pytest.raises(TypeError, match="expected a Parameter or None for 'w', received ndarray"):
        holder.register_parameter("w", np.ones(2))


@pytest.mark.parametrize("layer", [lm.Dense(3, 2), lm.Tanh()], ids=lambda layer: type(layer).__name__)
def test_a_bad_output_gradient_names_the_layer_and_keeps_its_cache(layer):
    """A list, an integer array or a wrong shape for dy: the error names the
    layer and what it expected; the forward cache stays, so a right dy
    afterwards gives the same gradients as if nothing had gone wrong."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    layer.zero_grad()
    y = layer(x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    label = type(layer).__name__
    bad = [
        (dy.tolist(), lm.DTypeError, rf"{label}\(.*expected the output gradient as an array, received list"),
        (np.ones(y.shape, dtype=np.int64), lm.DTypeError,
         rf"{label}\(.*expected a floating-point output gradient, received dtype int64"),
        (dy[:, :1], lm.ShapeError,
         rf"{label}\(.*expected the output gradient of shape \(4, {y.shape[1]}\), received \(4, 1\)"),
    ]
    for value, error, match in bad:
        with pytest.raises(error, match=match):
            layer.backward(value)
        assert layer.has_cache()
        assert all(p.grad is None for p in layer.parameters())
    dx = layer.backward(dy)
    fresh = type(layer)(3, 2) if isinstance(layer, lm.Dense) else type(layer)()
    fresh.load_state_dict(layer.state_dict())
    fresh(x)
    np.testing.assert_array_equal(dx, fresh.backward(dy))
    for p, q in zip(layer.parameters(), fresh.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad)


def test_sequential_edits_and_names_as_pytorch_does(torch):
    """Sequential(OrderedDict) names its children by the keys; slicing keeps
    the names; insert, pop and del renumber; assignment by index keeps the
    place: the state_dict keys follow nn.Sequential's edit for edit."""
    mine = lm.Sequential(OrderedDict(fc=lm.Dense(2, 3), act=lm.ReLU(), out=lm.Dense(3, 4)))
    theirs = torch.nn.Sequential(OrderedDict(fc=torch.nn.Linear(2, 3), act=torch.nn.ReLU(), out=torch.nn.Linear(3, 4)))
    assert list(mine.state_dict()) == list(theirs.state_dict()) == ["fc.weight", "fc.bias", "out.weight", "out.bias"]
    assert mine.fc is mine[0] and mine.out is mine[-1]
    mine.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((5, 2)).astype(np.float32)
    np.testing.assert_allclose(mine(x), theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-6, atol=1e-6)

    mine = lm.Sequential(lm.Dense(2, 3), lm.ReLU(), lm.Dense(3, 4), lm.Tanh(), lm.Dense(4, 5))
    theirs = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 4), torch.nn.Tanh(),
                                 torch.nn.Linear(4, 5))

    def same_keys():
        assert list(mine.state_dict()) == list(theirs.state_dict())
        assert [type(a).__name__ for a in mine] == [type(b).__name__.replace("Linear", "Dense") for b in theirs]

    assert list(mine[2:].state_dict()) == list(theirs[2:].state_dict()) == ["2.weight", "2.bias", "4.weight", "4.bias"]
    assert mine[2:][0] is mine[2] and isinstance(mine[1:3], lm.Sequential)
    mine[0], theirs[0] = lm.Dense(2, 3), torch.nn.Linear(2, 3)  # replaced in place: its keys stay first
    same_keys()
    del mine[1], theirs[1]
    same_keys()
    mine.insert(0, lm.Dense(2, 2))
    theirs.insert(0, torch.nn.Linear(2, 2))
    same_keys()
    assert isinstance(mine.pop(3), lm.Tanh) and isinstance(theirs.pop(3), torch.nn.Tanh)
    same_keys()
    mine.append(lm.ReLU()).extend([lm.Dense(5, 1)])
    theirs.append(torch.nn.ReLU()).extend([torch.nn.Linear(5, 1)])
    same_keys()
    del mine[::2], theirs[::2]
    same_keys()
    assert not hasattr(mine, "4")  # an attribute does not outlive its child
    with pytest.raises(IndexError, match="Sequential: index 3 out of range for 3 layers"):
        mine[3]
    with pytest.raises(IndexError, match="Sequential: insert index -5 out of range for 3 layers"):
        mine.insert(-5, lm.ReLU())
    with pytest.raises(TypeError, match="Sequential: expected an integer index or a slice, received str"):
        mine["0"]
    with pytest.raises(TypeError, match="Sequential: expected a Layer, received int"):
        mine[0] = 3
    with pytest.raises(KeyError, match="child name 'forward' would hide the attribute"):
        lm.Sequential(OrderedDict(forward=lm.ReLU()))
    with pytest.raises(ValueError, match="Sequential: expected checkpoint_segments >= 0, received -1"):
        lm.Sequential(lm.ReLU(), checkpoint_segments=-1)


def test_replacing_a_parameter_or_child_keeps_its_place_in_the_state_dict(torch):
    mine, theirs = lm.Dense(3, 2), torch.nn.Linear(3, 2)
    mine.weight = lm.Parameter(np.zeros((2, 3), np.float32))
    theirs.weight = torch.nn.Parameter(torch.zeros(2, 3))
    assert list(mine.state_dict()) == list(theirs.state_dict()) == ["weight", "bias"]
    model = lm.Sequential(OrderedDict(a=lm.Dense(3, 2), b=lm.Dense(2, 2)))
    model.a = lm.Dense(3, 2)
    assert list(model.state_dict()) == ["a.weight", "a.bias", "b.weight", "b.bias"]
    model.a = lm.Parameter(np.zeros(2, np.float32))  # another kind: it leaves the children for the parameters
    assert [n for n, _ in model.named_children()] == ["b"] and list(model.state_dict())[0] == "a"
