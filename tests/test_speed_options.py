"""SpeedOptions: fast settings applied before the first step; ones the network cannot use fall back with one
warning naming the option, and training goes on."""

from __future__ import annotations

import warnings

import lightning as L
import torch

from datamint_lightning.training.callbacks.speed import SpeedOptions


class Net(L.LightningModule):
    def __init__(self, dims: int):
        super().__init__()
        conv = torch.nn.Conv3d if dims == 3 else torch.nn.Conv2d
        self.net = conv(3, 4, 3, padding=1)
        self.shape = (2, 3, *([6] * dims))

    def training_step(self, batch, batch_idx):
        return self.net(batch[0].reshape(self.shape)).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        size = 3 * 6 ** (len(self.shape) - 2)
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(2, size)), batch_size=2)


def _fit(module, speed):
    trainer = L.Trainer(
        max_steps=2,
        callbacks=[speed],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module)
    assert trainer.global_step == 2  # trained through, whatever fell back
    return [str(w.message) for w in caught if "callbacks.speed" in str(w.message)]


def test_channels_last_on_a_2d_network():
    module = Net(2)
    assert _fit(module, SpeedOptions(channels_last=True)) == []
    assert module.net.weight.is_contiguous(memory_format=torch.channels_last)
    assert not module.net.weight.is_contiguous()


def test_channels_last_on_a_3d_network_falls_back_with_one_warning():
    module = Net(3)
    speed = SpeedOptions(channels_last=True)
    messages = _fit(module, speed)
    assert len(messages) == 1 and "channels_last" in messages[0] and "3D" in messages[0]
    assert speed.applied == {"precision": "32-true", "channels_last": False}
    assert module.net.weight.is_contiguous()


class AutocastProbe(Net):
    """Records the dtype its convolution computes in."""

    def training_step(self, batch, batch_idx):
        out = self.net(batch[0].reshape(self.shape))
        self.computed_in = out.dtype
        return out.float().pow(2).mean()


def test_bf16_on_a_cpu_trains_in_bf16_where_native_and_falls_back_to_float32_otherwise(monkeypatch):
    from datamint_lightning.training.callbacks import speed as speed_module

    def fit(native: bool):
        monkeypatch.setattr(speed_module, "_cpu_bf16", lambda: native)
        module, speed = AutocastProbe(2), SpeedOptions()
        trainer = L.Trainer(
            max_steps=2,
            callbacks=[speed],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            accelerator="cpu",
            precision="bf16-mixed",
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(module)
        assert trainer.global_step == 2
        return (
            module.computed_in,
            speed.applied["precision"],
            [str(w.message) for w in caught if "trainer.precision" in str(w.message)],
        )

    assert fit(True) == (torch.bfloat16, "bf16-mixed", [])
    dtype, applied, messages = fit(False)
    assert (dtype, applied) == (torch.float32, "32-true")
    assert len(messages) == 1 and "no native bfloat16" in messages[0] and "32-true" in messages[0]
