"""The ``lamina`` command line: ``lamina info``, ``lamina train``, ``lamina profile``, ``lamina gradcheck``."""

import argparse
import json
import platform
import sys
import time


def _info(args):
    import numpy as np

    import lamina
    from lamina import backend
    from lamina.ops import _ext

    lines = [f"lamina {lamina.__version__}", f"python {platform.python_version()} ({sys.executable})", f"numpy {np.__version__}"]
    c = _ext.cpu_module()
    if c is None:
        lines.append(f"lamina._C       not built ({_ext.import_error('_C')}); CPU kernels use NumPy references")
    else:
        simd = ("AVX2 + FMA" if c.cpu_has_avx2_fma() else "baseline SSE2 (this CPU lacks AVX2 or FMA)") if hasattr(
            c, "cpu_has_avx2_fma") else "baseline SSE2 (an older build)"
        lines.append(f"lamina._C       built: OpenMP {'on' if c.openmp else 'off'}, {c.num_threads()} threads, {simd}; "
                     f"kernels: {', '.join(c.kernels)}")
    g = _ext.cuda_module()
    if g is None:
        lines.append(f"lamina._C_cuda  not built ({_ext.import_error('_C_cuda')})")
    else:
        rt = g.runtime_version()
        lines.append(
            f"lamina._C_cuda  built for {g.archs}, CUDA runtime {rt // 1000}.{rt % 1000 // 10}; "
            f"kernels: {', '.join(g.kernels)}"
        )
        n = g.device_count()
        lines.append(f"                {n} CUDA device(s) visible" + ("" if n else " (no device or no driver)"))
    cp = backend.cupy_module()
    if cp is None:
        lines.append(f"cupy            not available ({backend.cupy_import_error()})")
    else:
        lines.append(f"cupy            {cp.__version__}, {backend.cuda_device_count()} device(s)")
    lines.append(f"cuda_available  {lamina.cuda_available()}")
    print("\n".join(lines))
    return 0


def _resolve_device(spec):
    import lamina

    if spec == "auto":
        return "cuda" if lamina.cuda_available() else "cpu"
    return spec


def _load_data(spec, seed):
    """(name, x_train, y_train, x_test, y_test) for a --data value."""
    from lamina import data

    name, _, directory = spec.partition(":")
    if name == "mnist1d":
        return (name, *data.load_mnist1d())
    if name == "digits":
        return (name, *data.load_digits(seed=seed))
    if name in ("mnist", "cifar10"):
        if not directory:
            raise SystemExit(f"lamina: --data {name} needs the folder of the downloaded files: --data {name}:DIR")
        loader = data.load_mnist if name == "mnist" else data.load_cifar10
        return (name, *loader(directory))
    raise SystemExit(f"lamina: unknown --data {spec!r}; expected mnist1d, digits, mnist:DIR or cifar10:DIR")


def _build_model(kind, x, hidden, classes=10):
    """A model for inputs shaped like x (N, ...); returns (model, x reshaped)."""
    from lamina import models

    if kind == "mlp":
        return models.mlp(int(x[0].size), hidden, classes, flatten=x.ndim > 2), x
    if x.ndim == 2:  # 1-d signals (MNIST-1D): add a channel axis
        if kind == "cnn":
            return models.mnist1d_cnn(x.shape[1], classes), x[:, None, :]
        raise SystemExit(f"lamina: --model {kind} needs image data (digits, mnist, cifar10)")
    c, h = x.shape[1], x.shape[2]
    if kind == "cnn":
        return (models.small_cnn(c, h, classes) if h < 16 else models.lenet(c, h, classes)), x
    if kind == "resnet":
        return models.resnet(c, classes, blocks_per_stage=1 if h < 16 else 3), x
    raise SystemExit(f"lamina: unknown --model {kind!r}; expected mlp, cnn or resnet")


def _setup(args):
    """What ``lamina train`` and ``lamina profile`` share: the seed, the device,
    the data and the model on it, with checkpointing and mixed precision
    as asked.  Returns (device, data name, model, (x_train, y_train, x_test, y_test))."""
    import lamina

    lamina.manual_seed(args.seed)
    device = _resolve_device(args.device)
    data_name, x_train, y_train, x_test, y_test = _load_data(args.data, args.seed)
    hidden = tuple(int(h) for h in args.hidden.split(",")) if args.hidden else ()
    model, x_train = _build_model(args.model, x_train, hidden)
    _, x_test = _build_model(args.model, x_test, hidden)
    model.to(device)
    if args.checkpoint_segments:
        model.checkpoint_segments = args.checkpoint_segments
    if args.amp != "none":
        lamina.amp.autocast(model, args.amp)
    return device, data_name, model, (x_train, y_train, x_test, y_test)


def _optimizer(name, params, lr, momentum, weight_decay):
    import lamina

    defaults = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3, "adagrad": 1e-2, "nadam": 2e-3, "radam": 1e-3,
                "adamax": 2e-3, "adadelta": 1.0, "asgd": 1e-2}
    if name not in defaults:
        raise SystemExit(f"lamina: unknown --optimizer {name!r}; expected one of {sorted(defaults)}")
    lr = defaults[name] if lr is None else lr
    if name == "sgd":
        return lamina.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "rmsprop":
        return lamina.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    cls = {"adam": lamina.optim.Adam, "adamw": lamina.optim.AdamW, "adagrad": lamina.optim.Adagrad,
           "nadam": lamina.optim.NAdam, "radam": lamina.optim.RAdam, "adamax": lamina.optim.Adamax,
           "adadelta": lamina.optim.Adadelta, "asgd": lamina.optim.ASGD}[name]
    return cls(params, lr=lr, weight_decay=weight_decay)


def _train(args):
    import os

    import numpy as np

    import lamina
    from lamina.data import DataLoader, train_val_split
    from lamina.train import Callback, EarlyStopping, evaluate, fit

    device, data_name, model, (x_train, y_train, x_test, y_test) = _setup(args)
    scaler = lamina.amp.LossScaler(enabled=args.amp == "float16") if args.amp != "none" else None
    val = None
    if args.val_fraction > 0:
        (x_train, y_train), val = train_val_split(x_train, y_train, val_fraction=args.val_fraction, seed=args.seed)
    opt = _optimizer(args.optimizer, model.parameters(), args.lr, args.momentum, args.weight_decay)
    scheduler = lamina.optim.CosineAnnealingLR(opt, T_max=args.epochs) if args.scheduler == "cosine" else None
    loss_fn = lamina.SoftmaxCrossEntropy()
    out = args.out or os.path.join("runs", f"{args.model}-{data_name}")
    print(f"lamina train: {args.model} ({model.num_parameters():,} parameters) on {data_name} "
          f"({len(x_train)} train / {0 if val is None else len(val[0])} val / {len(x_test)} test), "
          f"{args.optimizer}, {args.epochs} epochs, device {device}"
          + (f", {args.amp} mixed precision" if args.amp != "none" else "")
          + (f", {args.checkpoint_segments} checkpoint segments" if args.checkpoint_segments else "")
          + f", output in {out}", flush=True)

    class Log(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            if epoch % args.log_every == 0 or epoch == args.epochs:
                print(f"epoch {epoch:4d}  " + "  ".join(f"{k} {v:.4g}" for k, v in logs.items()), flush=True)

    callbacks = [Log()]
    if args.patience and val is not None:
        callbacks.append(EarlyStopping("val_loss", patience=args.patience, restore_best=True))
    loader = DataLoader(x_train, y_train, batch_size=args.batch_size, shuffle=True)
    from lamina.train.fit import Trainer

    trainer = Trainer(model, loss_fn, opt, loader, scheduler, scaler=scaler)
    start = time.perf_counter()
    history = fit(model, loss_fn, opt, loader, val=val, epochs=args.epochs, scheduler=scheduler, callbacks=callbacks,
                  progress=None if args.progress == "auto" else args.progress == "on", clip_grad_norm=args.clip_grad_norm,
                  trainer=trainer)
    seconds = time.perf_counter() - start
    train_loss, train_acc = evaluate(model, loss_fn, x_train, y_train)
    test_loss, test_acc = evaluate(model, loss_fn, x_test, y_test)
    os.makedirs(out, exist_ok=True)
    trainer.save_checkpoint(os.path.join(out, "checkpoint.safetensors"))
    lamina.save(model, os.path.join(out, "model.safetensors"), {"model": args.model, "data": data_name})
    history.plot(os.path.join(out, "history.png"), title=f"{args.model} on {data_name}")
    metrics = {
        "model": args.model, "data": data_name, "optimizer": args.optimizer, "device": str(device), "amp": args.amp,
        "epochs": len(history.epochs), "train_loss": round(train_loss, 5), "train_accuracy": round(train_acc, 5),
        "test_loss": round(test_loss, 5), "test_accuracy": round(test_acc, 5), "seconds": round(seconds, 2),
        "parameters": model.num_parameters(), "out": out,
    }
    if val is not None:
        metrics["val_accuracy"] = round(history["val_accuracy"][-1], 5)
    from lamina.serialization import atomic_write

    atomic_write(os.path.join(out, "metrics.json"), (json.dumps(metrics, indent=2) + "\n").encode())
    print(json.dumps(metrics))
    return 0 if np.isfinite(test_loss) else 1


def _profile(args):
    import time as _time

    import lamina
    from lamina import backend

    device, data_name, model, (x_train, y_train, _, _) = _setup(args)
    opt = _optimizer(args.optimizer, model.parameters(), args.lr, args.momentum, 0.0)
    loss_fn = lamina.SoftmaxCrossEntropy()
    xb = backend.to_device(x_train[: args.batch_size].astype(model.dtype), device)
    yb = backend.to_device(y_train[: args.batch_size], device)

    def step():
        loss_fn.compute(model(xb), yb)
        opt.zero_grad()
        model.backward_parameters(loss_fn.backward())
        opt.step()

    for _ in range(args.warmup):  # first calls: kernel choice, workspaces, caches
        step()
    with lamina.profiler.profile(model) as prof:
        t0 = _time.perf_counter()
        for _ in range(args.steps):
            step()
        backend.synchronize(device)
        wall = (_time.perf_counter() - t0) * 1e3 / args.steps
    print(f"lamina profile: {args.model} ({model.num_parameters():,} parameters) on {data_name}, batch {len(xb)}, "
          f"{args.steps} steps after {args.warmup} warm-up, {args.optimizer}, device {device}"
          + (f", {args.amp} mixed precision" if args.amp != "none" else "")
          + (f", {args.checkpoint_segments} checkpoint segments" if args.checkpoint_segments else ""))
    print(prof.table(sort_by=args.sort))
    print(f"Per step: {prof.total_ms / args.steps:.3f} ms in the layers; {wall:.3f} ms of wall time with the profiler's "
          "hooks (time whole steps with lamina bench).")
    if args.json:
        prof.to_json(args.json)
    return 0


def _gradcheck(args):
    """Gradcheck every built-in layer on small random inputs and print a table."""
    import numpy as np

    import lamina as lm

    cases = [
        ("Dense(5, 3)", lambda: lm.Dense(5, 3), (4, 5)),
        ("ReLU", lm.ReLU, (3, 7)), ("LeakyReLU(0.1)", lambda: lm.LeakyReLU(0.1), (3, 7)),
        ("Sigmoid", lm.Sigmoid, (3, 7)), ("Tanh", lm.Tanh, (3, 7)), ("GELU", lm.GELU, (3, 7)),
        ("GELU(tanh)", lambda: lm.GELU("tanh"), (3, 7)), ("Softmax", lm.Softmax, (3, 7)),
        ("SiLU", lm.SiLU, (3, 7)), ("ELU(0.5)", lambda: lm.ELU(0.5), (3, 7)), ("Softplus", lm.Softplus, (3, 7)),
        ("Mish", lm.Mish, (3, 7)), ("LogSoftmax", lm.LogSoftmax, (3, 7)),
        ("Dropout(0.3)", lambda: lm.Dropout(0.3), (3, 7)), ("Flatten", lm.Flatten, (2, 3, 4)),
        ("Conv2D(3, 4, 3, stride=2, padding=1)", lambda: lm.Conv2D(3, 4, 3, stride=2, padding=1), (2, 3, 5, 6)),
        ("Conv2D(4, 4, 3, groups=2, dilation=2, padding='same')",
         lambda: lm.Conv2D(4, 4, 3, groups=2, dilation=2, padding="same"), (1, 4, 5, 5)),
        ("Conv1D(2, 3, 3, stride=2)", lambda: lm.Conv1D(2, 3, 3, stride=2), (2, 2, 9)),
        ("ConvTranspose2D(3, 4, 3, stride=2, padding=1, output_padding=1)",
         lambda: lm.ConvTranspose2D(3, 4, 3, stride=2, padding=1, output_padding=1), (2, 3, 3, 4)),
        ("MaxPool2D(2)", lambda: lm.MaxPool2D(2), (2, 3, 4, 5)), ("AvgPool2D(3, 2, 1)", lambda: lm.AvgPool2D(3, 2, 1), (2, 3, 5, 5)),
        ("MaxPool1D(3, 2, 1)", lambda: lm.MaxPool1D(3, 2, 1), (2, 3, 7)), ("AvgPool1D(2)", lambda: lm.AvgPool1D(2), (2, 3, 7)),
        ("GlobalAvgPool2D", lm.GlobalAvgPool2D, (2, 3, 4, 4)),
        ("AdaptiveMaxPool2D((3, 2))", lambda: lm.AdaptiveMaxPool2D((3, 2)), (2, 3, 7, 5)),
        ("BatchNorm1d(4)", lambda: lm.BatchNorm1d(4), (5, 4)), ("BatchNorm2d(3)", lambda: lm.BatchNorm2d(3), (2, 3, 3, 4)),
        ("BatchNorm2d(3).eval()", lambda: lm.BatchNorm2d(3).eval(), (2, 3, 3, 4)),
        ("Residual(Conv2D, BatchNorm2d)", lambda: lm.Residual(lm.Sequential(lm.Conv2D(3, 3, 3, padding=1), lm.BatchNorm2d(3))), (2, 3, 4, 4)),
        ("LayerNorm(5)", lambda: lm.LayerNorm(5), (2, 3, 5)), ("GroupNorm(2, 4)", lambda: lm.GroupNorm(2, 4), (2, 4, 3, 3)),
        ("RMSNorm(5)", lambda: lm.RMSNorm(5), (2, 3, 5)), ("PReLU(3)", lambda: lm.PReLU(3), (2, 3, 4)),
        ("InstanceNorm2d(3, affine=True)", lambda: lm.InstanceNorm2d(3, affine=True), (2, 3, 3, 4)),
        ("Dropout2d(0.3)", lambda: lm.Dropout2d(0.3), (2, 4, 3, 3)),
        ("Conv2D(3, 4, 3, padding=2, padding_mode='reflect')", lambda: lm.Conv2D(3, 4, 3, padding=2, padding_mode="reflect"), (2, 3, 4, 5)),
        ("ReplicationPad2d((1, 2, 0, 3))", lambda: lm.ReplicationPad2d((1, 2, 0, 3)), (2, 3, 3, 4)),
        ("PixelShuffle(2)", lambda: lm.PixelShuffle(2), (2, 8, 3, 2)),
        ("Upsample(scale_factor=2, mode='bilinear')", lambda: lm.Upsample(scale_factor=2, mode="bilinear"), (2, 3, 3, 4)),
        ("MultiheadAttention(4, 2, causal=True)", lambda: lm.MultiheadAttention(4, 2, causal=True), (2, 3, 4)),
        ("MultiheadAttention(4, 2), query and memory", lambda: lm.MultiheadAttention(4, 2), [(2, 3, 4), (2, 5, 4)]),
        ("TransformerDecoderLayer(4, 2, 6, causal=True)",
         lambda: lm.TransformerDecoderLayer(4, 2, 6, dropout=0.0, causal=True), [(2, 3, 4), (2, 5, 4)]),
        ("RNN(3, 4, nonlinearity='relu')", lambda: lm.RNN(3, 4, nonlinearity="relu"), (2, 4, 3)),
        ("LSTM(3, 3, 2, bidirectional=True)", lambda: lm.LSTM(3, 3, 2, bidirectional=True), (2, 4, 3)),
        ("GRU(3, 4, return_sequences=False)", lambda: lm.GRU(3, 4, return_sequences=False), (2, 5, 3)),
    ]
    rng = np.random.default_rng(args.seed)
    rows, failed = [], 0
    for name, make, shapes in cases:
        shapes = shapes if isinstance(shapes, list) else [shapes]  # a list: one shape per input
        xs = [rng.standard_normal(shape) for shape in shapes]
        for x in xs:
            x[np.abs(x) < 1e-3] += 2e-3  # away from the kinks of ReLU and max
        t = time.perf_counter()
        try:
            ok = lm.testing.gradcheck(make(), *xs)
            detail = ""
        except AssertionError as e:
            ok, detail = False, str(e).splitlines()[0][:80]
        failed += not ok
        rows.append((name, ", ".join("x".join(map(str, shape)) for shape in shapes), "ok" if ok else "FAIL", f"{(time.perf_counter() - t) * 1e3:.0f} ms", detail))
    widths = [max(len(r[i]) for r in rows + [("layer", "input", "result", "time", "")]) for i in range(4)]
    print("  ".join(h.ljust(w) for h, w in zip(("layer", "input", "result", "time"), widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + (f"  {r[4]}" if r[4] else ""))
    print(f"\n{len(rows) - failed} of {len(rows)} layers pass gradcheck (float64 central differences, eps 1e-6, atol 1e-5, rtol 1e-3)")
    return 1 if failed else 0


def _bench(args, rest):
    """Run benchmarks/bench.py of a source checkout in a fresh process (it sets
    thread-pool environment variables before NumPy and PyTorch load)."""
    import os
    import subprocess

    import lamina

    candidates = [args.path] if args.path else []
    candidates += [os.path.join(os.getcwd(), "benchmarks", "bench.py"),
                   os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(lamina.__file__)))), "benchmarks", "bench.py")]
    for path in candidates:
        if path and os.path.isfile(path):
            return subprocess.call([sys.executable, path, *rest])
    print("lamina bench: benchmarks/bench.py not found; run it from a lamina source checkout or pass --path", file=sys.stderr)
    return 2


def build_parser():
    p = argparse.ArgumentParser(prog="lamina", description="lamina: layers with hand-derived backward passes")
    sub = p.add_subparsers(dest="command")

    info = sub.add_parser("info", help="versions, backends and which kernels are built")
    info.set_defaults(func=_info)

    train = sub.add_parser("train", help="train a model; with no arguments, an MLP on MNIST-1D (generated offline)")
    train.add_argument("--model", default="mlp", help="mlp, cnn or resnet (default mlp)")
    train.add_argument("--data", default="mnist1d", help="mnist1d, digits, mnist:DIR or cifar10:DIR (default mnist1d)")
    train.add_argument("--epochs", type=int, default=30)
    train.add_argument("--batch-size", type=int, default=100)
    train.add_argument("--optimizer", default="sgd", help="sgd, adam, adamw, rmsprop, adagrad, nadam, radam, adamax, adadelta or asgd (default sgd)")
    train.add_argument("--lr", type=float, default=None, help="learning rate (default 0.05 for sgd, 1e-3 otherwise)")
    train.add_argument("--momentum", type=float, default=0.9)
    train.add_argument("--weight-decay", type=float, default=0.0)
    train.add_argument("--scheduler", default="none", help="none or cosine")
    train.add_argument("--clip-grad-norm", type=float, default=None)
    train.add_argument("--amp", default="none", choices=["none", "float16", "bfloat16"],
                       help="mixed precision: 16-bit compute, float32 master weights (float16 with loss scaling)")
    train.add_argument("--checkpoint-segments", type=int, default=0,
                       help="gradient checkpointing: recompute all but the last of this many segments in backward")
    train.add_argument("--val-fraction", type=float, default=0.1, help="share of the training data held out for validation")
    train.add_argument("--patience", type=int, default=0, help="early stopping patience in epochs (0: off)")
    train.add_argument("--hidden", default="256,256", help="MLP hidden widths, comma separated (default 256,256)")
    train.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    train.add_argument("--out", default=None, help="folder for the checkpoint, weights, plot and metrics (default runs/MODEL-DATA)")
    train.add_argument("--progress", default="auto", choices=["auto", "on", "off"], help="tqdm progress bar (auto: on a terminal)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--log-every", type=int, default=5)
    train.set_defaults(func=_train)

    bench = sub.add_parser("bench", help="lamina against PyTorch: training-step benchmarks (from a source checkout)",
                           description="Runs benchmarks/bench.py; other arguments go to it (see its --help).")
    bench.add_argument("--path", default=None, help="path of bench.py (default: ./benchmarks/bench.py)")
    bench.set_defaults(func=_bench)

    prof = sub.add_parser("profile", help="time a training step layer by layer (forward, backward, recompute, cache)")
    prof.add_argument("--model", default="mlp", help="mlp, cnn or resnet (default mlp)")
    prof.add_argument("--data", default="mnist1d", help="mnist1d, digits, mnist:DIR or cifar10:DIR (default mnist1d)")
    prof.add_argument("--batch-size", type=int, default=100)
    prof.add_argument("--steps", type=int, default=10, help="profiled steps (default 10)")
    prof.add_argument("--warmup", type=int, default=3, help="steps before profiling (default 3)")
    prof.add_argument("--optimizer", default="sgd", help="as for lamina train (default sgd)")
    prof.add_argument("--lr", type=float, default=None)
    prof.add_argument("--momentum", type=float, default=0.9)
    prof.add_argument("--amp", default="none", choices=["none", "float16", "bfloat16"])
    prof.add_argument("--checkpoint-segments", type=int, default=0)
    prof.add_argument("--hidden", default="256,256", help="MLP hidden widths (default 256,256)")
    prof.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    prof.add_argument("--sort", default=None, help="sort the rows by a column, largest first (self_ms, backward_ms, ...)")
    prof.add_argument("--json", default=None, help="also write the per-layer records to this JSON file")
    prof.add_argument("--seed", type=int, default=0)
    prof.set_defaults(func=_profile)

    gc = sub.add_parser("gradcheck", help="check every built-in layer's backward against finite differences")
    gc.add_argument("--seed", type=int, default=0)
    gc.set_defaults(func=_gradcheck)
    return p


def main(argv=None):
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "bench":
        return args.func(args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args.func(args)
