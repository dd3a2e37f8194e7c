"""The ``datamint`` MLflow flavor: ``save_model`` / ``log_model`` (a model instance first) and ``load_model``.

The MLmodel carries ``flavors.datamint`` with the official Datamint SDK's key names (``task_type``,
``supported_modes``, ``model_settings``, ``linked_models``, ``annotation_specs``, ``datamint_version``), and the
same keys (plus ``device``, so that ``load_model(device=...)`` can override it) as ``python_function.config``.

Unlike the SDK's pickle, the package holds: the model's code (this package and the model class's own module, as
MLflow ``code_paths``, so it loads where ``datamint_lightning`` is not installed), a models-from-code script that
imports the class and sets its saved attributes back (``serving/saved_state.py``), its networks as config +
safetensors weights, linked MLflow models copied into ``LINKED_MODELS_DIR``, and pinned requirements that name
only distributions a package index has.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from importlib import metadata, util
from pathlib import Path
from typing import Any

from datamint_lightning.errors import PackagingError

FLAVOR_NAME = "datamint"
PACKAGE = "datamint_lightning"
# What the bundled package needs to load a model and decode its inputs (pinned to the installed versions).
BASE_REQUIREMENTS = ("torch", "safetensors", "numpy", "pillow", "pydicom", "nibabel", "pynrrd", "mlflow")
NETWORK_REQUIREMENTS = {
    "smp": "segmentation-models-pytorch",
    "monai": "monai",
    "torchvision": "torchvision",
    "timm": "timm",
}
PARAM_TYPES_FALLBACK = "string"


def package_version() -> str:
    try:
        return metadata.version("datamint-lightning")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def default_pip_requirements(extra: Sequence[str] = ("segmentation-models-pytorch",)) -> list[str]:
    """Exact pins of installed versions (a local ``+cu128`` suffix dropped: indexes do not serve it) for what
    the model needs at load time; inferring them costs ~15 s per save. This package itself is not a requirement:
    its code travels with the model."""
    pins = []
    for package in (*BASE_REQUIREMENTS[:1], *extra, *BASE_REQUIREMENTS[1:]):
        if any(p.split("==")[0] == package for p in pins):
            continue
        try:
            pins.append(f"{package}=={metadata.version(package).split('+')[0]}")
        except metadata.PackageNotFoundError:
            pins.append(package)
    return pins


def default_signature(model=None):
    """Inputs are free-form (paths, arrays, JSON dicts): no input schema. Params: ``mode``, ``mask_format`` and
    every param a handler of ``model`` accepts, each defaulting to None (the handler's own default)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    from datamint_lightning.serving.modes import PARAM_TYPES

    names = model.router.accepted_params() if model is not None else ["confidence_threshold", "batch_size"]
    specs = [ParamSpec("mode", "string", "default"), ParamSpec("mask_format", "string", None)]
    specs += [
        ParamSpec(name, PARAM_TYPES.get(name, PARAM_TYPES_FALLBACK), None)
        for name in names
        if name not in ("mode", "mask_format")
    ]
    return ModelSignature(inputs=None, outputs=None, params=ParamSchema(specs))


def _instance(datamint_model: Any):
    """The model instance (a class is instantiated without arguments); its class must be importable later."""
    from datamint_lightning.serving.base_model import BaseDatamintModel

    model = datamint_model() if isinstance(datamint_model, type) else datamint_model
    if not isinstance(model, BaseDatamintModel):
        raise PackagingError(
            f"save_model/log_model take a BaseDatamintModel (or DatamintModel) instance, got "
            f"{type(datamint_model).__name__}."
        )
    cls = type(model)
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        where = "in __main__ (a notebook or a script)" if cls.__module__ == "__main__" else "inside a function"
        raise PackagingError(
            f"{cls.__qualname__} is defined {where}, so a loaded package could not import it. "
            f"Move the class to a module file (e.g. my_models.py), import it from there and save "
            f"again: that module is bundled with the package."
        )
    return model


def _infer_task_type(model, task_type: Any, annotation_specs: list[dict[str, Any]]) -> str:
    from datamint_lightning.serving.enums import TaskType

    value = task_type if task_type is not None else type(model).task_type
    if value in (None, ""):
        types = {(s.get("type"), s.get("scope", "image")) for s in annotation_specs}
        kinds = {kind for kind, _ in types}
        if kinds == {"segmentation"}:
            value = "volume_segmentation" if {scope for _, scope in types} == {"volume"} else "image_segmentation"
        elif kinds == {"category"}:
            value = "image_classification"
    if value in (None, ""):
        raise PackagingError(
            f"task_type of {type(model).__name__} is unset and cannot be inferred from its "
            f"annotation_specs; pass task_type=... or set {type(model).__name__}.task_type to one "
            f"of {[t.value for t in TaskType]}."
        )
    try:
        return TaskType(getattr(value, "value", value)).value
    except ValueError:
        raise PackagingError(f"task_type={value!r} is not one of {[t.value for t in TaskType]}.") from None


def _supported_modes(model, requested: Sequence[str] | None, linked_modes: list[str]) -> list[str]:
    from datamint_lightning.serving.enums import PredictionMode

    available = [*model.get_supported_modes(), *[m for m in linked_modes if m not in model.get_supported_modes()]]
    if requested is None:
        return [m.value for m in PredictionMode if m.value in available]
    modes = [str(getattr(mode, "value", mode)) for mode in requested]
    for mode in modes:
        if mode not in available:
            raise PackagingError(
                f"supported_modes entry {mode!r} is not implemented by {type(model).__name__}; "
                f"it implements {available}."
            )
    return modes


def _copy_linked_models(model, folder: Path) -> tuple[Path | None, list[str]]:
    """Each linked model downloaded into ``folder/<LINKED_MODELS_DIR>/<name>``; also the modes of linked
    Datamint models (merged into this model's at load time)."""
    import mlflow.artifacts
    from mlflow.models import Model

    uris = getattr(model, "linked_models_uri", {}) or {}
    if not uris:
        return None, []
    root = folder / model.LINKED_MODELS_DIR
    modes: list[str] = []
    for name, uri in uris.items():
        target = root / name
        try:
            target.mkdir(parents=True)
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target))
            flavors = Model.load(local).flavors
        except Exception as error:  # MLflow raises several types for missing/unreachable models
            raise PackagingError(f"Cannot resolve linked model {name!r} at {uri}: {error}") from error
        if Path(local) != target:  # a directory model arrives as target/<basename>: flatten it
            for item in Path(local).iterdir():
                item.rename(target / item.name)
            Path(local).rmdir()
        modes += list((flavors.get(FLAVOR_NAME) or {}).get("supported_modes") or [])
    return root, modes


def _is_installed_distribution(module_name: str) -> bool:
    spec = util.find_spec(module_name)
    origin = str(spec.origin or "") if spec else ""
    return any(part in origin for part in ("site-packages", "dist-packages"))


def _code_paths(model, code_paths: Sequence[str] | None) -> list[str]:
    """This package's source, the model class's top-level module (unless it is an installed distribution) and
    the caller's ``code_paths``."""
    package = Path(sys.modules[PACKAGE].__file__).parent
    paths = [str(package)]
    torch = sys.modules.get("torch")
    modules = [v for v in vars(model).values() if torch is not None and isinstance(v, torch.nn.Module)]
    # the model class's module and those of the user's own network classes it holds
    for top in dict.fromkeys(type(o).__module__.split(".")[0] for o in (model, *modules)):
        if top != PACKAGE and top != "__main__" and not _is_installed_distribution(top):
            origin = Path(sys.modules[top].__file__)
            paths.append(str(origin.parent if origin.name == "__init__.py" else origin))
    for path in code_paths or ():
        if Path(path).resolve() not in {Path(p).resolve() for p in paths}:
            paths.append(str(path))
    return paths


def _requirements(model, module_folder: Path, extra: Sequence[str] | None) -> list[str]:
    """Base pins, the model class's ``pip_packages``, the library of every saved network, then ``extra``."""
    import json

    libraries = list(type(model).pip_packages)
    for folder in sorted(module_folder.glob("datamint_module_*")):
        library = json.loads((folder / "model_spec.json").read_text())["network"].get("library", "smp")
        if library != "python":  # the user's own class: its code travels with the package
            libraries.append(NETWORK_REQUIREMENTS.get(library, library))
    return [*default_pip_requirements(libraries), *(extra or ())]


def flavor_config(
    task_type: str,
    supported_modes: list[str],
    model_settings: dict[str, Any],
    linked_models: dict[str, str],
    annotation_specs: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "task_type": task_type,
        "supported_modes": list(supported_modes),
        "model_settings": model_settings,
        "linked_models": dict(linked_models),
        "annotation_specs": list(annotation_specs),
        "datamint_version": package_version(),
    }


def save_model(
    datamint_model,
    path: str | os.PathLike,
    task_type=None,
    supported_modes: Sequence[str] | None = None,
    data_path=None,
    code_paths: Sequence[str] | None = None,
    infer_code_paths: bool = False,
    conda_env=None,
    mlflow_model=None,
    artifacts: dict[str, str] | None = None,
    signature=None,
    input_example: Any = None,
    pip_requirements: Sequence[str] | None = None,
    extra_pip_requirements: Sequence[str] | None = None,
    metadata: dict[str, Any] | None = None,
    model_config: dict[str, Any] | None = None,
    streamable: bool | None = None,
    annotation_specs: list[dict[str, Any]] | None = None,
    model_settings: dict[str, Any] | None = None,
    **kwargs,
) -> None:
    """Save ``datamint_model`` (a ``BaseDatamintModel`` instance) as a Datamint model directory at ``path``.

    ``task_type`` and ``supported_modes`` default to the model's (``supported_modes`` checked against the modes
    it implements). ``annotation_specs`` and ``model_settings`` (replacing the instance's settings) are this
    project's extensions. ``infer_code_paths`` is accepted for compatibility: the model class's module is always
    bundled. ``input_example`` (``(inputs, params)`` or inputs, in the JSON request form) is stored as is: MLflow's
    own check would load and run the model (slow) and cannot infer anything from free-form inputs.
    """
    import copy
    import warnings

    import mlflow.pyfunc
    from mlflow.models import Model
    from mlflow.models.utils import _save_example

    from datamint_lightning.serving.saved_state import capture_state, model_code

    model = _instance(datamint_model)
    if model_settings is not None:
        model.settings = model_settings
    kwargs.pop("validate_serving_input", None)
    kwargs.pop("run_id", None)
    mlflow_model = mlflow_model or Model()
    specs = list(annotation_specs or [])
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(input_example|type hints).*")
        folder = Path(folder)
        linked_root, linked_modes = _copy_linked_models(model, folder)
        state, module_artifacts = capture_state(model, folder)
        config = flavor_config(
            _infer_task_type(model, task_type, specs),
            _supported_modes(model, supported_modes, linked_modes),
            model.settings.to_dict(),
            getattr(model, "linked_models_uri", {}),
            specs,
        )
        all_artifacts = {**(artifacts or {}), **module_artifacts}
        if linked_root is not None:
            all_artifacts[model.LINKED_MODELS_DIR] = str(linked_root)
        if data_path is not None:
            all_artifacts["data"] = str(data_path)
        script = folder / "datamint_model.py"
        script.write_text(model_code(type(model), state))
        if conda_env is None and pip_requirements is None:
            pip_requirements = _requirements(model, folder, extra_pip_requirements)
        elif pip_requirements is not None:
            pip_requirements = [*pip_requirements, *(extra_pip_requirements or ())]
        mlflow.pyfunc.save_model(
            path,
            python_model=str(script),
            artifacts=all_artifacts or None,
            code_paths=_code_paths(model, code_paths),
            mlflow_model=mlflow_model,
            signature=signature or default_signature(model),
            conda_env=conda_env,
            model_config=copy.deepcopy({**config, "device": None, **(model_config or {})}),
            pip_requirements=pip_requirements,
            metadata=metadata,
            streamable=streamable,
            **kwargs,
        )
    if input_example is not None:
        _save_example(mlflow_model, input_example, str(path))
    mlflow_model.add_flavor(FLAVOR_NAME, **config)
    mlflow_model.save(str(Path(path) / "MLmodel"))


def log_model(
    datamint_model,
    task_type=None,
    supported_modes: Sequence[str] | None = None,
    name: str = "datamint_model",
    data_path=None,
    code_paths: Sequence[str] | None = None,
    infer_code_paths: bool = False,
    artifacts: dict[str, str] | None = None,
    registered_model_name: str | None = None,
    signature=None,
    input_example: Any = None,
    pip_requirements: Sequence[str] | None = None,
    extra_pip_requirements: Sequence[str] | None = None,
    metadata: dict[str, Any] | None = None,
    model_config: dict[str, Any] | None = None,
    run_id: str | None = None,
    **kwargs,
):
    """Log ``datamint_model`` to a run (MLflow 3 ``name=``; ``run_id`` defaults to the active run); returns
    MLflow's ``ModelInfo``. Other arguments as in ``save_model``."""
    from mlflow import MlflowClient
    from mlflow.models import Model

    model_id = None
    if run_id:  # MLflow would file the LoggedModel under the active experiment, not the run's
        client = MlflowClient()
        experiment_id = client.get_run(run_id).info.experiment_id
        model_id = client.create_logged_model(
            experiment_id, name=name, source_run_id=run_id, tags={"mlflow.datamint.flavor": FLAVOR_NAME}
        ).model_id
    return Model.log(
        artifact_path=None,
        name=name,
        flavor=sys.modules[__name__],
        registered_model_name=registered_model_name,
        run_id=run_id,
        model_id=model_id,
        datamint_model=_instance(datamint_model),
        task_type=task_type,
        supported_modes=supported_modes,
        data_path=data_path,
        code_paths=code_paths,
        infer_code_paths=infer_code_paths,
        artifacts=artifacts,
        signature=signature,
        input_example=input_example,
        pip_requirements=pip_requirements,
        extra_pip_requirements=extra_pip_requirements,
        metadata=metadata,
        model_config=model_config,
        validate_serving_input=False,
        **kwargs,
    )


def load_model(model_uri: str, device: str | None = None, dst_path: str | Path | None = None):
    """The Datamint model instance saved at ``model_uri``, loaded (``load_context`` done) on ``device``.

    ``device`` (``"cpu"``, ``"cuda:1"``) overrides ``MLFLOW_DEFAULT_PREDICTION_DEVICE`` (the SDK ignores it).
    ``mlflow.pyfunc.load_model`` gives the same model behind MLflow's pyfunc wrapper. ``dst_path``: where a
    remote model is downloaded (default: a new folder in the system temp folder that MLflow never removes; use
    ``reloaded_model`` for a load that cleans up).
    """
    import mlflow.pyfunc

    pyfunc = mlflow.pyfunc.load_model(
        model_uri,
        model_config={"device": device} if device else None,
        dst_path=None if dst_path is None else str(dst_path),
    )
    return pyfunc.unwrap_python_model()


@contextlib.contextmanager
def reloaded_model(model_uri: str, device: str | None = None) -> Iterator[Any]:
    """The model loaded for a check and its downloaded files removed afterwards.

    ``mlflow.pyfunc.load_model`` downloads a model held by a remote store (``mlflow server``) into
    ``tempfile.mkdtemp()`` and never deletes it: a copy of the whole package left behind per load.
    """
    with tempfile.TemporaryDirectory(prefix="datamint-reload-") as folder:
        yield load_model(model_uri, device=device, dst_path=folder)
