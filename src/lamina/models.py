"""Ready-made models used by the command line and the examples."""

from .layers import (
    BatchNorm2d,
    Conv1D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    MaxPool2D,
    ReLU,
    Residual,
    Sequential,
)


def mlp(in_features, hidden=(256, 256), out_features=10, dropout=0.0, flatten=False):
    """(Flatten →) Dense → ReLU (→ Dropout) for each hidden width, then a Dense classifier."""
    layers = [Flatten()] if flatten else []
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


def lenet(in_channels=1, image_size=28, out_features=10):
    """LeNet-style CNN: conv32(5x5) - pool - conv64(5x5) - pool - fc128 - fc10."""
    s = image_size // 4
    return Sequential(
        Conv2D(in_channels, 32, 5, padding=2), ReLU(), MaxPool2D(2),
        Conv2D(32, 64, 5, padding=2), ReLU(), MaxPool2D(2),
        Flatten(), Dense(64 * s * s, 128), ReLU(), Dense(128, out_features),
    )


def mnist1d_cnn(length=40, out_features=10, channels=25):
    """The CNN of the MNIST-1D paper (Greydanus, 2020) on (N, 1, L) signals:
    three Conv1D (kernel 5, 3, 3; stride 2; padding 1) with ReLU, then Dense."""
    out = length
    for k in (5, 3, 3):
        out = (out + 2 - k) // 2 + 1
    return Sequential(
        Conv1D(1, channels, 5, stride=2, padding=1), ReLU(),
        Conv1D(channels, channels, 3, stride=2, padding=1), ReLU(),
        Conv1D(channels, channels, 3, stride=2, padding=1), ReLU(),
        Flatten(), Dense(channels * out, out_features),
    )


def basic_block(cin, cout, stride=1):
    """ResNet basic block: conv3x3-BN-ReLU-conv3x3-BN plus a shortcut (a 1x1
    conv and BN when the shape changes), then ReLU."""
    body = Sequential(
        Conv2D(cin, cout, 3, stride=stride, padding=1, bias=False), BatchNorm2d(cout), ReLU(),
        Conv2D(cout, cout, 3, padding=1, bias=False), BatchNorm2d(cout),
    )
    shortcut = None
    if stride != 1 or cin != cout:
        shortcut = Sequential(Conv2D(cin, cout, 1, stride=stride, bias=False), BatchNorm2d(cout))
    return Sequential(Residual(body, shortcut), ReLU())


def resnet(in_channels=3, out_features=10, blocks_per_stage=3, widths=(16, 32, 64)):
    """CIFAR-style ResNet (He et al., 2016, section 4.2): 6n+2 layers for
    n = blocks_per_stage (3: ResNet-20), stages of ``widths`` channels, the
    later ones halving the resolution, then global average pooling and Dense."""
    layers = [Conv2D(in_channels, widths[0], 3, padding=1, bias=False), BatchNorm2d(widths[0]), ReLU()]
    cin = widths[0]
    for stage, w in enumerate(widths):
        for b in range(blocks_per_stage):
            layers.append(basic_block(cin, w, 2 if (stage > 0 and b == 0) else 1))
            cin = w
    layers += [GlobalAvgPool2D(), Dense(cin, out_features)]
    return Sequential(*layers)
