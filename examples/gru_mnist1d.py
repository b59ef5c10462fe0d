"""Train a GRU on MNIST-1D, read as a sequence of 40 one-feature steps, with
``lamina.train.fit`` (gradient clipping, validation after every epoch), on
the GPU if there is one.

    python examples/gru_mnist1d.py
"""

import lamina as lm
from lamina.data import load_mnist1d


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
    history = lm.train.fit(
        model, lm.SoftmaxCrossEntropy(), lm.optim.Adam(model.parameters(), lr=3e-3),
        (x_train, y_train), val=(x_test, y_test), epochs=epochs, batch_size=batch_size,
        clip_grad_norm=1.0, progress=None if verbose else False,  # a bar on a terminal
    )
    accuracy = history["val_accuracy"][-1]
    if verbose:
        print(f"test accuracy after {epochs} epochs: {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    main()
