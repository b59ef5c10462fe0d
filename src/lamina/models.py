"""Ready-made models used by the command line and the examples."""

from .layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sequential


def mlp(in_features, hidden=(256, 256), out_features=10, dropout=0.0):
    """Dense → ReLU (→ Dropout) for each hidden width, then a Dense classifier."""
    layers = []
    width = in_features
    for h in hidden:
        layers += [Dense(width, h), ReLU()]
        if dropout:
            layers.append(Dropout(dropout))
        width = h
    layers.append(Dense(width, out_features))
    return Sequential(*layers)


def small_cnn(in_channels=1, image_size=8, out_features=10, channels=(16, 32), hidden=64):
    """A small CNN for small images, (N, C, S, S) → (N, out_features):
    two 3x3 "same" convolutions with ReLU, a 2x2 max-pool, then
    Dense(hidden) → ReLU → Dense(out_features)."""
    c1, c2 = channels
    return Sequential(
        Conv2D(in_channels, c1, 3, padding=1), ReLU(),
        Conv2D(c1, c2, 3, padding=1), ReLU(), MaxPool2D(2),
        Flatten(), Dense(c2 * (image_size // 2) ** 2, hidden), ReLU(), Dense(hidden, out_features),
    )
