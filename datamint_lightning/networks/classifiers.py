"""torchvision and timm image classifiers from their JSON config, never with downloaded weights.

Config: ``{"library": "torchvision" | "timm", "arch": name, "num_classes": K, "in_channels": 1, ...}``; other keys
go to the constructor.
"""

from __future__ import annotations

from typing import Any

import torch

from datamint_lightning.errors import ConfigError

LIBRARIES = ("torchvision", "timm")
PIP_PACKAGES = {"torchvision": "torchvision", "timm": "timm"}


def _set_first_conv_channels(network: torch.nn.Module, in_channels: int) -> None:
    """Replace the first RGB ``Conv2d`` (the stem) with one taking ``in_channels`` (torchvision nets are RGB)."""
    for name, module in network.named_modules():
        if isinstance(module, torch.nn.Conv2d) and module.in_channels == 3:
            stem = torch.nn.Conv2d(
                in_channels,
                module.out_channels,
                module.kernel_size,
                module.stride,
                module.padding,
                module.dilation,
                module.groups,
                module.bias is not None,
                module.padding_mode,
            )
            parent, _, attribute = name.rpartition(".")
            setattr(network.get_submodule(parent) if parent else network, attribute, stem)
            return
    raise ConfigError(
        f"Cannot find an RGB stem convolution in {type(network).__name__} to take {in_channels} "
        "channel(s); use library 'timm' (in_chans) instead."
    )


def build_classifier(config: dict[str, Any]) -> torch.nn.Module:
    """A torchvision or timm classifier from its config, randomly initialised, in eval mode."""
    config = dict(config)
    library, arch = config.pop("library", "torchvision"), config.pop("arch", None)
    in_channels, num_classes = int(config.pop("in_channels", 1)), config.pop("num_classes", None)
    if library not in LIBRARIES or not arch or not num_classes:
        raise ConfigError(
            f"A classifier config needs library in {LIBRARIES}, arch and num_classes; got "
            f"library={library!r}, arch={arch!r}, num_classes={num_classes!r}."
        )
    for key in ("weights", "pretrained"):  # never download: weights come from the package
        config.pop(key, None)
    try:
        if library == "timm":
            import timm

            network = timm.create_model(
                arch, pretrained=False, in_chans=in_channels, num_classes=int(num_classes), **config
            )
        else:
            from torchvision import models

            network = models.get_model(arch, weights=None, num_classes=int(num_classes), **config)
            if in_channels != 3:
                _set_first_conv_channels(network, in_channels)
    except (KeyError, ValueError, TypeError, RuntimeError) as error:
        raise ConfigError(f"Cannot build {library} classifier {arch!r} with {config}: {error}") from error
    return network.eval()


def _cached_weights_file(library: str, arch: str):
    """The local file holding ``arch``'s ImageNet weights, or a ``ConfigError`` saying where it was looked for.

    Only caches are read (torch hub's ``checkpoints/`` and the Hugging Face hub cache): a training job must not
    stall on, or depend on, a download.
    """
    from pathlib import Path
    from urllib.parse import urlparse

    hub_checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    looked: list[str] = []
    try:
        if library == "timm":
            import timm

            cfg = timm.models.get_pretrained_cfg(arch)
            hf_id, url = (cfg.hf_hub_id, cfg.url) if cfg is not None else (None, None)
        else:
            from torchvision import models

            hf_id, url = None, models.get_model_weights(arch).DEFAULT.url
    except (KeyError, ValueError, RuntimeError) as error:
        raise ConfigError(f"{library} network {arch!r} has no known pretrained weights: {error}") from error
    if hf_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(hf_id, filename)
            if isinstance(found, str):
                return Path(found)
            looked.append(f"Hugging Face cache {hf_id}/{filename}")
    if url:
        candidate = hub_checkpoints / Path(urlparse(url).path).name
        if candidate.is_file():
            return candidate
        looked.append(str(candidate))
    raise ConfigError(
        f"network.pretrained=true but the pretrained weights of {library} {arch!r} are not in the "
        f"local cache (looked at: {'; '.join(looked) or 'nothing to look for'}). Training never "
        "downloads: fetch them once on a machine with internet access into that cache, or set "
        "model.network.pretrained=false."
    )


def _adapt_stem(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """RGB stem weights for ``channels`` inputs, keeping the response to a grey image (timm's rule)."""
    if channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-channels // 3)
    return weight.repeat(1, repeats, 1, 1)[:, :channels] * (3.0 / channels)


def load_pretrained(network: torch.nn.Module, config: dict[str, Any]) -> list[str]:
    """Copy ``config``'s ImageNet weights from the local cache into ``network`` (built by ``build_classifier``).

    RGB stem weights are summed over their colour channels for a 1-channel input (timm's rule); layers whose
    shape differs (the classifier head, sized for the project's labels) keep their random initialisation and
    are returned by name.
    """
    path = _cached_weights_file(str(config.get("library", "torchvision")), str(config.get("arch")))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        source = load_file(str(path))
    else:
        source = torch.load(path, map_location="cpu", weights_only=True)
    target = network.state_dict()
    adopted, skipped = {}, []
    for key, value in target.items():
        weight = source.get(key)
        if weight is not None and weight.ndim == 4 and weight.shape[1] == 3 and value.shape[1] != 3:
            weight = _adapt_stem(weight, value.shape[1])
        if weight is None or weight.shape != value.shape:
            skipped.append(key)
        else:
            adopted[key] = weight
    if not adopted:
        raise ConfigError(f"The cached weights {path} do not fit network {config.get('arch')!r}.")
    network.load_state_dict(adopted, strict=False)
    return skipped
