"""The ``lamina`` command line: ``lamina info``, ``lamina train``."""

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
        lines.append(f"lamina._C       built: OpenMP {'on' if c.openmp else 'off'}, {c.num_threads()} threads; kernels: {', '.join(c.kernels)}")
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


def _train(args):
    import numpy as np

    import lamina
    from lamina.data import load_mnist1d
    from lamina.models import mlp
    from lamina.train import evaluate, train_epoch

    lamina.manual_seed(args.seed)
    device = _resolve_device(args.device)
    x_train, y_train, x_test, y_test = load_mnist1d()
    hidden = tuple(int(h) for h in args.hidden.split(",")) if args.hidden else ()
    model = mlp(x_train.shape[1], hidden, 10).to(device)
    loss_fn = lamina.SoftmaxCrossEntropy()
    opt = lamina.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    print(f"lamina train: MLP {x_train.shape[1]}-{'-'.join(map(str, hidden))}-10 on MNIST-1D "
          f"({len(x_train)} train / {len(x_test)} test), {args.epochs} epochs, device {device}", flush=True)
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        train_loss = train_epoch(model, loss_fn, opt, x_train, y_train, args.batch_size)
        if epoch % args.log_every == 0 or epoch == args.epochs:
            test_loss, test_acc = evaluate(model, loss_fn, x_test, y_test)
            print(f"epoch {epoch:4d}  train loss {train_loss:.4f}  test loss {test_loss:.4f}  test acc {test_acc:.4f}", flush=True)
    train_loss, train_acc = evaluate(model, loss_fn, x_train, y_train)
    test_loss, test_acc = evaluate(model, loss_fn, x_test, y_test)
    metrics = {
        "model": "mlp", "data": "mnist1d", "device": str(device), "epochs": args.epochs,
        "train_loss": round(train_loss, 5), "train_accuracy": round(train_acc, 5),
        "test_loss": round(test_loss, 5), "test_accuracy": round(test_acc, 5),
        "seconds": round(time.perf_counter() - start, 2), "parameters": model.num_parameters(),
    }
    print(json.dumps(metrics))
    return 0 if np.isfinite(test_loss) else 1


def build_parser():
    p = argparse.ArgumentParser(prog="lamina", description="lamina: layers with hand-derived backward passes")
    sub = p.add_subparsers(dest="command")

    info = sub.add_parser("info", help="versions, backends and which kernels are built")
    info.set_defaults(func=_info)

    train = sub.add_parser("train", help="train the default MLP on MNIST-1D (generated offline)")
    train.add_argument("--epochs", type=int, default=30)
    train.add_argument("--batch-size", type=int, default=100)
    train.add_argument("--lr", type=float, default=0.05)
    train.add_argument("--momentum", type=float, default=0.9)
    train.add_argument("--weight-decay", type=float, default=0.0)
    train.add_argument("--hidden", default="256,256", help="hidden widths, comma separated (default 256,256)")
    train.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--log-every", type=int, default=5)
    train.set_defaults(func=_train)
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.func(args)
