"""The benchmark models, built twice from one description: in lamina and in
PyTorch, with the same layer names so that one state_dict fits both."""

import lamina as lm


def _ns(m):
    """The layer constructors of lamina (m is lamina) or of torch.nn."""
    if m is lm:
        return dict(conv=lm.Conv2D, bn=lm.BatchNorm2d, relu=lm.ReLU, maxpool=lm.MaxPool2D, flatten=lm.Flatten,
                    dense=lm.Dense, seq=lm.Sequential, gap=lm.GlobalAvgPool2D, residual=lm.Residual,
                    encoder=lm.TransformerEncoderLayer,
                    lstm_last=lambda *a, **k: lm.LSTM(*a, return_sequences=False, **k))
    nn = m.nn

    class LSTMLast(nn.LSTM):
        """nn.LSTM returning the last layer's final hidden state (lamina's return_sequences=False)."""

        def forward(self, x):
            return super().forward(x)[1][0][-1]

    class Residual(nn.Module):
        def __init__(self, body, shortcut=None):
            super().__init__()
            self.body, self.shortcut = body, shortcut

        def forward(self, x):
            return self.body(x) + (x if self.shortcut is None else self.shortcut(x))

    return dict(conv=nn.Conv2d, bn=nn.BatchNorm2d, relu=nn.ReLU, maxpool=nn.MaxPool2d, flatten=nn.Flatten,
                dense=nn.Linear, seq=nn.Sequential, gap=lambda: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
                residual=Residual, encoder=lambda *a, **k: nn.TransformerEncoderLayer(*a, batch_first=True, **k),
                lstm_last=lambda *a, **k: LSTMLast(*a, batch_first=True, **k))


def mlp(m, sizes=(784, 512, 512, 10)):
    """MLP with ReLU between its Dense layers: 784-512-512-10 by default."""
    L = _ns(m)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [L["dense"](a, b)] + ([L["relu"]()] if i < len(sizes) - 2 else [])
    return L["seq"](*layers)


def lenet(m):
    """LeNet-style CNN on 1x28x28: conv32(5x5) - pool - conv64(5x5) - pool - fc128 - fc10."""
    L = _ns(m)
    return L["seq"](
        L["conv"](1, 32, 5, padding=2), L["relu"](), L["maxpool"](2),
        L["conv"](32, 64, 5, padding=2), L["relu"](), L["maxpool"](2),
        L["flatten"](), L["dense"](64 * 7 * 7, 128), L["relu"](), L["dense"](128, 10),
    )


def _block(L, cin, cout, stride):
    body = L["seq"](
        L["conv"](cin, cout, 3, stride=stride, padding=1, bias=False), L["bn"](cout), L["relu"](),
        L["conv"](cout, cout, 3, padding=1, bias=False), L["bn"](cout),
    )
    shortcut = None
    if stride != 1 or cin != cout:
        shortcut = L["seq"](L["conv"](cin, cout, 1, stride=stride, bias=False), L["bn"](cout))
    return L["seq"](L["residual"](body, shortcut), L["relu"]())


def resnet(m, blocks_per_stage=3, widths=(16, 32, 64), num_classes=10):
    """CIFAR ResNet (He et al. 2016, section 4.2) on 3x32x32: 6n+2 layers,
    n = blocks_per_stage (3 gives ResNet-20, 1 gives ResNet-8)."""
    L = _ns(m)
    layers = [L["conv"](3, widths[0], 3, padding=1, bias=False), L["bn"](widths[0]), L["relu"]()]
    cin = widths[0]
    for stage, w in enumerate(widths):
        for b in range(blocks_per_stage):
            layers.append(_block(L, cin, w, 2 if (stage > 0 and b == 0) else 1))
            cin = w
    layers += [L["gap"](), L["dense"](cin, num_classes)]
    return L["seq"](*layers)


def transformer(m, d_model=256, nhead=4, dim_feedforward=1024, seq_len=128, num_classes=10):
    """One pre-LN Transformer encoder block (GELU, no dropout) on (L=128, E=256)
    sequences, then a linear classifier over the flattened sequence."""
    L = _ns(m)
    return L["seq"](
        L["encoder"](d_model, nhead, dim_feedforward, dropout=0.0, activation="gelu", norm_first=True),
        L["flatten"](), L["dense"](seq_len * d_model, num_classes),
    )


def lstm(m, input_size=128, hidden_size=256, num_classes=10):
    """A sequence classifier: one LSTM layer over (L=50, 128) sequences, its
    final hidden state into a linear classifier."""
    L = _ns(m)
    return L["seq"](L["lstm_last"](input_size, hidden_size), L["dense"](hidden_size, num_classes))
