"""Ready-made models used by the command line and the examples."""

from .layers import Dense, Dropout, ReLU, Sequential


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
