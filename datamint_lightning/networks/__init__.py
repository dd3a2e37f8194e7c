"""Every network the framework trains or serves, built from a JSON-serialisable config, and saved the way
segmentation-models-pytorch's ``save_pretrained`` does: the config as JSON plus the weights as safetensors, never
a pickle. Training and serving both build through here, so a packaged model rebuilds exactly what was trained.

A config names its ``library`` (``smp``, ``monai``, ``torchvision``, ``timm``) or the caller gives a default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datamint_lightning.errors import ConfigError

LIBRARIES = ("smp", "monai", "torchvision", "timm", "python")
SPEC_FILE = "model_spec.json"
WEIGHTS_FILE = "weights.safetensors"


def build_network(config: dict[str, Any], library: str = "smp"):
    """The network ``config`` describes, randomly initialised (pretrained weights only where the config asks
    for them and the smp builder allows it; see ``networks.smp_networks``)."""
    library = str(config.get("library") or library)
    if library == "smp":
        from datamint_lightning.networks.smp_networks import build_smp_network as build
    elif library == "monai":
        from datamint_lightning.networks.monai_networks import build_monai_network as build
    elif library in ("torchvision", "timm"):
        from datamint_lightning.networks.classifiers import build_classifier as build
    elif library == "python":  # the user's own nn.Module class (see python_modules.py)
        from datamint_lightning.networks.python_modules import build_python_module as build
    else:
        raise ConfigError(f"network library={library!r} is not one of {', '.join(LIBRARIES)}.")
    network = build({**config, "library": library} if library in ("torchvision", "timm") else config)
    # The config travels with the module, so a Datamint model holding it can be saved as config + weights.
    network.datamint_network = {**config, "library": library}
    return network


def save_spec_and_weights(folder: str | Path, spec: dict[str, Any], network) -> dict[str, Path]:
    """``model_spec.json`` (``spec``: network config, labels, preprocessing, ...) and ``weights.safetensors``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec_path, weights_path = folder / SPEC_FILE, folder / WEIGHTS_FILE
    spec_path.write_text(json.dumps(spec, indent=2))
    save_file({k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}, str(weights_path))
    return {"spec": spec_path, "weights": weights_path}


def load_network(config: dict[str, Any], weights_path: str | Path, device: str = "cpu", library: str = "smp"):
    """The network of ``config`` with the saved weights, in eval mode on ``device`` (never downloads)."""
    from safetensors.torch import load_file

    network = build_network({**config, **({"encoder_weights": None} if "encoder_weights" in config else {})}, library)
    network.load_state_dict(load_file(str(weights_path)))
    return network.eval().to(device)
