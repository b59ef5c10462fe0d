"""What a training run recorded, epoch by epoch, and a plot of it."""

import json
import math
import os


class History:
    """Per-epoch records of a :func:`lamina.train.fit` run.

    Attributes:
        epochs: the epoch numbers (from 1).
        metrics: name -> list of per-epoch values (``loss``, ``accuracy``,
            ``val_loss``, ``val_accuracy``, ``lr``).
        grad_norms: layer name -> list of per-epoch mean L2 norms of that
            layer's parameter gradients (over the epoch's batches), so
            vanishing or exploding gradients can be spotted.
    """

    def __init__(self):
        self.epochs = []
        self.metrics = {}
        self.grad_norms = {}

    def record(self, epoch, logs, grad_norms=None):
        self.epochs.append(int(epoch))
        for k, v in logs.items():
            self.metrics.setdefault(k, []).append(float(v))
        for k, v in (grad_norms or {}).items():
            self.grad_norms.setdefault(k, []).append(float(v))

    def __getitem__(self, name):
        return self.metrics[name]

    def last(self):
        """The metrics of the last epoch."""
        return {k: v[-1] for k, v in self.metrics.items()}

    def state_dict(self):
        return {"epochs": list(self.epochs), "metrics": {k: list(v) for k, v in self.metrics.items()},
                "grad_norms": {k: list(v) for k, v in self.grad_norms.items()}}

    def load_state_dict(self, state):
        self.epochs = list(state["epochs"])
        self.metrics = {k: list(v) for k, v in state["metrics"].items()}
        self.grad_norms = {k: list(v) for k, v in state["grad_norms"].items()}

    def to_json(self):
        return json.dumps(self.state_dict())

    def plot(self, path, title=None):
        """Write a PNG: loss and accuracy curves (train and validation) and
        each layer's gradient norm over training (log scale).  Uses
        matplotlib's Agg backend, so it needs no display."""
        import matplotlib  # noqa: PLC0415 - only needed for plots

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure  # noqa: PLC0415

        from ..serialization import atomic_write  # noqa: PLC0415

        fig = Figure(figsize=(15, 4.2), layout="constrained")
        axes = fig.subplots(1, 3)
        for ax, name in zip(axes[:2], ("loss", "accuracy")):
            for key, style in ((name, "-"), (f"val_{name}", "--")):
                if key in self.metrics:
                    ax.plot(self.epochs, self.metrics[key], style, marker="o", markersize=3, label=key)
            ax.set_xlabel("epoch")
            ax.set_title(name)
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend()
        ax = axes[2]
        for layer, values in self.grad_norms.items():
            ax.plot(self.epochs, [v if v > 0 and math.isfinite(v) else math.nan for v in values], label=layer)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title("gradient norm per layer")
        ax.grid(alpha=0.3, which="both")
        if self.grad_norms:
            ax.legend(fontsize="x-small", ncols=2 if len(self.grad_norms) > 12 else 1, loc="center left", bbox_to_anchor=(1.01, 0.5))
        if title:
            fig.suptitle(title)
        import io  # noqa: PLC0415

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        atomic_write(os.fspath(path), buf.getvalue())
        return path
