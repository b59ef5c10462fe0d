"""Train an MLP on MNIST-1D with the explicit loop, on the GPU if there is one.

    python examples/mlp_mnist1d.py
"""

import numpy as np

import lamina as lm
from lamina.data import load_mnist1d
from lamina.train import evaluate


def main(epochs=30, batch_size=100, seed=0):
    lm.manual_seed(seed)
    x_train, y_train, x_test, y_test = load_mnist1d()
    device = "cuda" if lm.cuda_available() else "cpu"

    model = lm.Sequential(
        lm.Dense(40, 256), lm.ReLU(),
        lm.Dense(256, 256), lm.ReLU(),
        lm.Dense(256, 10),
    ).to(device)
    model.summary(input_shape=(batch_size, 40))
    loss_fn = lm.SoftmaxCrossEntropy()
    opt = lm.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
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
            model.backward(loss_fn.backward())     # backward
            opt.step()                             # update
        if epoch % 5 == 0:
            test_loss, test_acc = evaluate(model, loss_fn, x_test, y_test)
            print(f"epoch {epoch:3d}  last batch loss {loss:.4f}  test loss {test_loss:.4f}  test accuracy {test_acc:.3f}")


if __name__ == "__main__":
    main()
