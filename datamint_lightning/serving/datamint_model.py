"""``DatamintModel``: a ``BaseDatamintModel`` with linked MLflow models and an in-memory torch model.

``mlflow_models_uri`` ({name: URI}) are loaded as pyfunc models, ``mlflow_torch_models_uri`` ({name: URI}) as
``torch.nn.Module`` (``mlflow.pytorch``). ``save_model`` copies each linked model into ``LINKED_MODELS_DIR`` inside
the package, and ``load_context`` loads them from there (so a package works offline), falling back to the URI.
A linked Datamint model's prediction modes join this model's (``PredictionRouter.update_registry``).
``torch_model`` is saved as network config + weights (see ``saved_state.py``), never pickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from datamint_lightning.errors import PackagingError
from datamint_lightning.serving.base_model import BaseDatamintModel
from datamint_lightning.serving.settings import ModelSettings


def load_linked_model(name: str, uri: str, device: str, torch_flavor: bool, local: Path | None = None) -> Any:
    """Linked model ``name``: from ``local`` (its copy in the package) when present, else from ``uri``."""
    import mlflow.pyfunc
    import mlflow.pytorch

    source = str(local) if local is not None and local.is_dir() else uri
    try:
        if torch_flavor:
            module = mlflow.pytorch.load_model(source, map_location=device)
            try:
                module.eval()
            except NotImplementedError:  # torch.export ("pt2") modules are inference graphs already
                pass
            return module
        from mlflow.models import Model

        if "datamint" in Model.load(source).flavors:
            return mlflow.pyfunc.load_model(source, model_config={"device": device})
        return mlflow.pyfunc.load_model(source)
    except Exception as error:  # MLflow raises several types for missing/unreachable models
        raise PackagingError(f"Cannot load linked model {name!r} from {source}: {error}") from error


class DatamintModel(BaseDatamintModel):
    """Adds linked MLflow models (loaded at serve time) and an in-memory ``torch_model`` to the router."""

    LINKED_MODELS_DIR: ClassVar[str] = "linked_models"
    transient_attributes: ClassVar[tuple[str, ...]] = ("_mlflow_models", "_mlflow_torch_models")

    def __init__(
        self,
        settings: ModelSettings | dict[str, Any] | None = None,
        mlflow_torch_models_uri: dict[str, str] | None = None,
        mlflow_models_uri: dict[str, str] | None = None,
        torch_model: Any = None,
    ):
        super().__init__(settings)
        self._mlflow_torch_models_uri = dict(mlflow_torch_models_uri or {})
        self._mlflow_models_uri = dict(mlflow_models_uri or {})
        shared = sorted(set(self._mlflow_models_uri) & set(self._mlflow_torch_models_uri))
        if shared:
            raise PackagingError(
                f"Linked model names {shared} are in both mlflow_models_uri and "
                "mlflow_torch_models_uri; give each linked model one name."
            )
        for name, uri in {**self._mlflow_models_uri, **self._mlflow_torch_models_uri}.items():
            if not isinstance(uri, str) or not uri:
                raise PackagingError(f"Linked model {name!r} must be an MLflow model URI (str), got {uri!r}.")
        self._torch_model = torch_model
        self._mlflow_models: dict[str, Any] = {}
        self._mlflow_torch_models: dict[str, Any] = {}

    @property
    def mlflow_models_uri(self) -> dict[str, str]:
        return dict(self.__dict__.get("_mlflow_models_uri") or {})

    @property
    def mlflow_torch_models_uri(self) -> dict[str, str]:
        return dict(self.__dict__.get("_mlflow_torch_models_uri") or {})

    @property
    def linked_models_uri(self) -> dict[str, str]:
        """Every linked model's URI by name (the flavor's ``linked_models``)."""
        return {**self.mlflow_models_uri, **self.mlflow_torch_models_uri}

    def get_mlflow_models(self) -> dict[str, Any]:
        """The linked pyfunc models, loaded (by ``load_context``, or here on first use in-process)."""
        self._load_linked()
        return dict(self._mlflow_models)

    def get_mlflow_torch_models(self) -> dict[str, Any]:
        """The linked PyTorch models as ``torch.nn.Module`` on the inference device."""
        self._load_linked()
        return dict(self._mlflow_torch_models)

    def get_pytorch_model(self) -> Any:
        """The in-memory ``torch_model`` (rebuilt from its config + weights in a loaded package), or None."""
        return self.__dict__.get("_torch_model")

    def load_context(self, context) -> None:
        """Device, saved networks, linked models (from ``LINKED_MODELS_DIR`` when present), subclass artifacts."""
        super().load_context(context)
        local = (getattr(context, "artifacts", None) or {}).get(self.LINKED_MODELS_DIR)
        self._load_linked(Path(local) if local else None)
        self.load_artifacts(context)
        self.to_device()

    def _load_linked(self, local_dir: Path | None = None) -> None:
        for attribute in ("_mlflow_models", "_mlflow_torch_models"):
            if self.__dict__.get(attribute) is None:
                setattr(self, attribute, {})
        for uris, loaded, torch_flavor in (
            (self.mlflow_models_uri, self._mlflow_models, False),
            (self.mlflow_torch_models_uri, self._mlflow_torch_models, True),
        ):
            for name, uri in uris.items():
                if name not in loaded:
                    loaded[name] = load_linked_model(
                        name, uri, self.inference_device, torch_flavor, local_dir / name if local_dir else None
                    )
                    if not torch_flavor and hasattr(loaded[name], "unwrap_python_model"):
                        linked = loaded[name].unwrap_python_model()
                        if isinstance(linked, BaseDatamintModel):
                            self.router.update_registry(linked, BaseDatamintModel)

    def load_artifacts(self, context) -> None:
        """Subclasses rebuild their own networks here (before the move to the device)."""

    def to_device(self) -> None:
        import torch

        super().to_device()
        loaded = self.__dict__.get("_mlflow_torch_models") or {}
        for name, value in list(loaded.items()):
            if isinstance(value, torch.nn.Module):
                loaded[name] = value.to(self.inference_device)
