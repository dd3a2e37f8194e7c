"""A user's own network module, kept outside the tests' import path: test_user_modules.py imports it from here,
and a package made of it must load in a process where this file cannot be imported."""

from __future__ import annotations

import torch


class TinySegNet(torch.nn.Module):
    """Keeps its constructor arguments as attributes, as most modules do: saved as import path + arguments."""

    def __init__(self, channels: int, classes: int = 2, kernel: tuple[int, int] = (3, 3)):
        super().__init__()
        self.channels, self.classes, self._kernel = channels, classes, kernel
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(1, channels, kernel, padding="same"), torch.nn.ReLU(), torch.nn.Conv2d(channels, classes, 1)
        )

    def forward(self, x):
        return self.body(x)


class Forgetful(torch.nn.Module):
    """Does not keep ``width``: its arguments cannot be recovered without help."""

    def __init__(self, width: int, depth: int = 1):
        super().__init__()
        self.depth = depth
        self.layers = torch.nn.Sequential(*[torch.nn.Conv2d(1 if i == 0 else width, width, 1) for i in range(depth)])

    def forward(self, x):
        return self.layers(x)
