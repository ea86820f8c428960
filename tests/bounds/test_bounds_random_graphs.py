"""Property test: random graphs of the ops the issue #13 review attacked (views and in-place
writes, broadcasting, tuples, sorts, reshapes) never get a bound below their Jacobian."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from bounds_oracles import jacobian_norms
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lipcert.bounds import lipschitz_bound

WIDTH = 6  # features per sample, kept through every op


def _op(kind: str, scale: float):
    """One (N, WIDTH) -> (N, WIDTH) op."""
    if kind == "split-inplace":
        def op(h):
            h = h * 1.0
            first, _ = torch.split(h, 3, 1)
            first *= scale
            return h
    elif kind == "chunk-reread":
        def op(h):
            parts = (h * 1.0).chunk(2, 1)
            first = parts[0]
            first *= scale
            return torch.cat([parts[0], parts[1]], 1)
    elif kind == "chunk-cat":
        def op(h):
            return torch.cat(h.chunk(2, 1)[::-1], 1)
    elif kind == "unbind-stack":
        def op(h):
            return torch.stack(h.unbind(1), 1) * scale
    elif kind == "clamp-broadcast":
        def op(h):
            low = -torch.ones(1, 2, 1)
            return torch.clamp(h[:, :3].unsqueeze(1), min=low).flatten(1)
    elif kind == "expand":
        def op(h):
            return h[:, :2].unsqueeze(1).expand(-1, 3, -1).flatten(1)
    elif kind == "sort":
        def op(h):
            return torch.sort(h.unflatten(1, (3, 2)), dim=2).values.flatten(1)
    elif kind == "movedim":
        def op(h):
            return h.unflatten(1, (2, 3)).movedim(1, 2).flatten(1)
    elif kind == "narrow-inplace":
        def op(h):
            h = h + 0.0
            piece = h.narrow(1, 2, 3)
            piece += scale * piece
            return h
    elif kind == "residual":
        def op(h):
            return h + scale * torch.tanh(h)
    else:  # "leaky"
        def op(h):
            return F.leaky_relu(h, scale)
    return op


KINDS = ["split-inplace", "chunk-reread", "chunk-cat", "unbind-stack", "clamp-broadcast",
         "expand", "sort", "movedim", "narrow-inplace", "residual", "leaky"]


class RandomGraph(nn.Module):
    def __init__(self, plan, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.linears = nn.ModuleList(nn.Linear(WIDTH, WIDTH) for _ in plan)
        self.ops = [_op(kind, scale) for kind, scale in plan]

    def forward(self, x):
        for linear, op in zip(self.linears, self.ops, strict=True):
            x = op(linear(x))
        return x


@settings(max_examples=40, deadline=None)
@given(plan=st.lists(st.tuples(st.sampled_from(KINDS),
                               # (scales below 1e-6 could underflow float64 products:
                               # the running bound is float64, rounded to nearest)
                               st.floats(-3.0, 3.0).filter(lambda v: v == 0 or abs(v) > 1e-6)),
                     min_size=1, max_size=4),
       seed=st.integers(0, 10_000))
def test_random_graphs_never_beat_their_bound(plan, seed):
    model = RandomGraph(plan, seed)
    with torch.no_grad():
        bound = float(lipschitz_bound(model, torch.randn(2, WIDTH)))
        points = torch.randn(32, WIDTH, generator=torch.Generator().manual_seed(seed)) * 2
        observed = float(jacobian_norms(model, points).max())
    assert observed <= bound * (1 + 1e-9), (plan, observed, bound)
