"""Train a GRU on MNIST-1D, read as a sequence of 40 one-feature steps, with
the explicit loop, on the GPU if there is one.

    python examples/gru_mnist1d.py
"""

import numpy as np

import lamina as lm
from lamina.data import load_mnist1d
from lamina.train import evaluate


def main(epochs=20, batch_size=100, seed=0, verbose=True):
    """Train; returns the final test accuracy."""
    lm.manual_seed(seed)
    x_train, y_train, x_test, y_test = load_mnist1d()
    x_train, x_test = x_train[:, :, None], x_test[:, :, None]  # (N, 40 steps, 1 feature)
    device = "cuda" if lm.cuda_available() else "cpu"

    model = lm.Sequential(
        lm.GRU(1, 64, num_layers=2, bidirectional=True, return_sequences=False),  # the final states: (N, 128)
        lm.Dense(128, 10),
    ).to(device)
    if verbose:
        model.summary(input_shape=(batch_size, 40, 1))
    loss_fn = lm.SoftmaxCrossEntropy()
    opt = lm.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(seed)

    for epoch in range(1, epochs + 1):
        model.train()
        order = rng.permutation(len(x_train))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            xb = lm.backend.to_device(x_train[idx], device)
            yb = lm.backend.to_device(y_train[idx], device)
            loss = loss_fn(model(xb), yb)          # forward
            opt.zero_grad()
            model.backward(loss_fn.backward())     # backward through time
            lm.optim.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()                             # update
        if epoch % 5 == 0 or epoch == epochs:
            test_loss, test_acc = evaluate(model, loss_fn, x_test, y_test)
            if verbose:
                print(f"epoch {epoch:3d}  last batch loss {loss:.4f}  test loss {test_loss:.4f}  test accuracy {test_acc:.3f}")

    return test_acc


if __name__ == "__main__":
    main()
