"""``DatamintModel``: a ``BaseDatamintModel`` with linked models and ``ModelSettings``.

Linked models are other MLflow models named by URI (``models:/name@alias``, ``runs:/...``), loaded in
``load_context`` (PyTorch-flavored ones as ``torch.nn.Module``, others as pyfunc), or ``torch.nn.Module`` objects
passed directly (in-process use). ``load_context`` moves every torch module the model holds to the inference device.
A linked model held by a remote store is downloaded into a folder owned by the loading model, removed with it
(MLflow's own download folder would stay in the system temp folder for good).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from datamint_lightning.errors import PackagingError
from datamint_lightning.serving.base_model import BaseDatamintModel, inference_device
from datamint_lightning.serving.settings import ModelSettings

logger = logging.getLogger(__name__)


def _is_module(value: Any) -> bool:
    import torch

    return isinstance(value, torch.nn.Module)


def load_linked_model(uri: str, device: str, folder: str | Path | None = None) -> Any:
    """A linked MLflow model: a ``torch.nn.Module`` for the ``pytorch`` flavor, else a pyfunc model on ``device``.

    ``folder``: where to download it first (then MLflow loads it from there rather than from its own temp copy).
    """
    from mlflow.models import Model

    try:
        if folder is not None:
            import mlflow.artifacts

            Path(folder).mkdir(parents=True, exist_ok=True)
            uri = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(folder))
        flavors = Model.load(uri).flavors
        if "pytorch" in flavors:
            import mlflow.pytorch

            module = mlflow.pytorch.load_model(uri, map_location=device)
            try:
                module.eval()
            except NotImplementedError:  # torch.export ("pt2") modules are inference graphs already
                pass
            return module
        if "datamint" in flavors:
            import mlflow.pyfunc

            return mlflow.pyfunc.load_model(uri, model_config={"device": device})
        import mlflow.pyfunc

        return mlflow.pyfunc.load_model(uri)
    except PackagingError:
        raise
    except Exception as error:  # MLflow raises several types for missing/unreachable models
        raise PackagingError(f"Cannot load linked model {uri}: {error}") from error


class DatamintModel(BaseDatamintModel):
    """Adds ``linked_models`` ({name: URI or nn.Module}) and ``settings`` to the router."""

    def __init__(self, linked_models: dict[str, Any] | None = None, settings: ModelSettings | dict | None = None,
                 device: str | None = None):
        super().__init__(device)
        self.linked_models: dict[str, Any] = dict(linked_models or {})
        self.settings = settings if isinstance(settings, ModelSettings) else ModelSettings.from_dict(settings)

    def linked(self, name: str) -> Any:
        try:
            return self.linked_models[name]
        except KeyError:
            raise PackagingError(f"No linked model {name!r}; linked models: {sorted(self.linked_models)}.") from None

    def load_context(self, context) -> None:
        """Resolve the device, load linked URIs, and move every torch module held to the device."""
        config = dict(getattr(context, "model_config", None) or {})
        if "model_settings" in config:
            self.settings = ModelSettings.from_dict(config["model_settings"])
        self.device = inference_device(config.get("device") or self.device)
        if self.settings.need_gpu and not self.device.startswith("cuda"):
            logger.warning("This model was saved with need_gpu=true but runs on %s; expect slow inference.",
                           self.device)
        for name, uri in dict(config.get("linked_models") or {}).items():
            self.linked_models.setdefault(name, uri)
        uris = {name: value for name, value in self.linked_models.items() if isinstance(value, str)}
        if uris:  # removed when this model is garbage-collected, or at exit
            self._downloads = tempfile.TemporaryDirectory(prefix="datamint-linked-")
        for index, (name, uri) in enumerate(uris.items()):
            self.linked_models[name] = load_linked_model(uri, self.device, Path(self._downloads.name) / str(index))
        self.load_artifacts(context)
        self.to_device()

    def load_artifacts(self, context) -> None:
        """Subclasses rebuild their networks here (before the move to the device)."""

    def to_device(self) -> None:
        for name, value in list(vars(self).items()):
            if _is_module(value):
                setattr(self, name, value.to(self.device))
        for name, value in list(self.linked_models.items()):
            if _is_module(value):
                self.linked_models[name] = value.to(self.device)
