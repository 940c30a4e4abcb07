"""A supervised FF net whose loss is a plain function and whose layer is an nn.Module written
here: the container and the loop need nothing else. Run: python examples/custom_pieces.py"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import forwardforward as ff


class RMSLinear(nn.Module):
    """Scale each input to unit mean square, then ReLU(W x + b)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.linear, self.out_features = nn.Linear(d_in, d_out), d_out

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.linear(x * x.square().mean(1, keepdim=True).add(1e-8).rsqrt()))


def pairwise(pos: Tensor, neg: Tensor) -> Tensor:
    """Each positive's goodness should beat its negative's by a wide margin."""
    return F.softplus(4.0 * (neg - pos)).mean()


torch.manual_seed(0)
data = ff.load_dataset("mnist")  # from the data directory; downloaded on first use
net = ff.FFSequential(
    [RMSLinear(784, 500), RMSLinear(500, 500)],
    labels=ff.OverwritePixels(num_classes=10, in_features=784),
    loss=pairwise,
    optimizer=lambda params: torch.optim.Adam(params, lr=0.01),
    schedule="cooldown",
)
ff.fit(net, data, epochs=4, batch_size=100)
print(f"test accuracy {ff.accuracy(net, data.test):.4f}")
