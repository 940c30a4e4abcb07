"""A two-layer supervised FF net built from the library's pieces (no preset, no RunConfig),
trained by the library's loop on MNIST. Run: python examples/custom_network.py"""

import torch

import forwardforward as ff

torch.manual_seed(0)
ff.keep_freed_memory()
data = ff.load_dataset("mnist")  # from the data directory; downloaded on first use


def layer(d_in: int, d_out: int) -> ff.FFLinear:
    return ff.FFLinear(d_in, d_out, activation="relu_st", init="normal_fan_out", peer_weight=0.03)


net = ff.FFSequential(
    [layer(784, 1000), layer(1000, 1000)],
    labels=ff.OverwritePixels(num_classes=10, in_features=784),  # the label replaces 10 pixels
    negatives=ff.Hard(),  # wrong labels drawn from the probe's own softmax
    goodness=ff.mean_squares,
    loss=ff.SymBa(alpha=4.0),
    optimizer=lambda params: torch.optim.Adam(params, lr=0.01),
    schedule="cooldown",
    readout="probe",  # a linear softmax on the layers' activities, trained jointly
)
ff.fit(net, data, epochs=4, batch_size=100)
print(f"test accuracy {ff.accuracy(net, data.test):.4f}")
