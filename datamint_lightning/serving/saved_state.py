"""What of a Datamint model instance is saved with its package, without pickling it.

The official SDK cloudpickles the instance (a 105 MB ``python_model.pkl`` that needs identical class paths).
Here the instance's attributes are saved as JSON, ``ModelSettings`` as its dict, and every ``torch.nn.Module``
attribute as a network config plus safetensors weights (``networks.save_spec_and_weights``), so only networks the
``networks`` package can rebuild are accepted. At load time the class is imported (its code travels with the
package), the attributes are set back without calling ``__init__`` (as unpickling would), and
``BaseDatamintModel.load_context`` rebuilds the networks from the artifacts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datamint_lightning.errors import PackagingError
from datamint_lightning.serving.settings import ModelSettings

SETTINGS_KEY = "__datamint_settings__"
MODULE_KEY = "__datamint_module__"
MODULE_ARTIFACT_PREFIX = "datamint_module_"
HOW_TO_SAVE = (
    "Keep only JSON values, ModelSettings and networks built by datamint_lightning.networks.build_network "
    "on the instance; log any other torch module with mlflow.pytorch.log_model and pass its URI in "
    "mlflow_torch_models_uri, or build such objects in load_context."
)


def transient_attributes(model: Any) -> set[str]:
    """Attributes rebuilt at load time (``transient_attributes`` of every class in the MRO)."""
    names: set[str] = set()
    for klass in type(model).__mro__:
        names.update(vars(klass).get("transient_attributes", ()))
    return names


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def network_description(module: Any, where: str) -> dict[str, Any]:
    """The config ``networks.build_network`` rebuilds ``module`` from; checked against its state dict."""
    import torch

    from datamint_lightning.networks import build_network

    config = getattr(module, "datamint_network", None)
    hint = "rebuild it with build_network"
    if isinstance(config, dict):
        config = {**config, **({"encoder_weights": None} if "encoder_weights" in config else {})}
    else:  # the user's own class: import path + constructor arguments
        from datamint_lightning.networks.python_modules import describe_module, mismatch_hint

        config = describe_module(module, where)
        hint = mismatch_hint(config)
    try:
        with torch.device("meta"):
            rebuilt = build_network(config)
    except Exception as error:
        raise PackagingError(f"{where} cannot be rebuilt from {config}: {error}; {hint}.") from error
    expected = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    actual = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    if expected != actual:
        different = sorted(set(expected.items()) ^ set(actual.items()))[:3]
        raise PackagingError(
            f"{where} no longer matches the network config it was built from {config} "
            f"(parameters differ, e.g. {different}); {hint}."
        )
    return config


def capture_state(model: Any, folder: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(JSON state of ``model``'s attributes, MLflow artifacts holding its networks written under ``folder``)."""
    import torch

    from datamint_lightning.networks import save_spec_and_weights

    state: dict[str, Any] = {}
    artifacts: dict[str, str] = {}
    skip = transient_attributes(model)
    for name, value in vars(model).items():
        where = f"{type(model).__name__}.{name}"
        if name in skip:
            continue
        if isinstance(value, ModelSettings):
            state[name] = {SETTINGS_KEY: value.to_dict()}
        elif isinstance(value, torch.nn.Module):
            key = f"{MODULE_ARTIFACT_PREFIX}{name.strip('_')}"
            save_spec_and_weights(Path(folder) / key, {"network": network_description(value, where)}, value)
            artifacts[key] = str(Path(folder) / key)
            state[name] = {MODULE_KEY: key}
        elif _is_plain(value):
            state[name] = json.loads(json.dumps(value))
        else:
            raise PackagingError(
                f"{where} holds a {type(value).__name__}, which cannot be saved without pickling. " + HOW_TO_SAVE
            )
    return state, artifacts


def rebuild(model_class: type, state: dict[str, Any]) -> Any:
    """An instance of ``model_class`` with ``state`` set back (networks stay placeholders until load_context)."""
    model = model_class.__new__(model_class)
    for name, value in state.items():
        if isinstance(value, dict) and SETTINGS_KEY in value:
            value = ModelSettings.from_dict(value[SETTINGS_KEY])
        setattr(model, name, value)
    return model


def restore_modules(model: Any, artifacts: dict[str, str]) -> None:
    """Replace network placeholders left by ``rebuild`` with the saved networks (on the CPU)."""
    from datamint_lightning.networks import SPEC_FILE, WEIGHTS_FILE, load_network

    for name, value in list(vars(model).items()):
        if isinstance(value, dict) and MODULE_KEY in value:
            folder = Path(artifacts[value[MODULE_KEY]])
            config = json.loads((folder / SPEC_FILE).read_text())["network"]
            setattr(model, name, load_network(config, folder / WEIGHTS_FILE, "cpu"))


def model_code(model_class: type, state: dict[str, Any]) -> str:
    """The models-from-code script MLflow stores instead of a pickle: import the class, set the state back."""
    return (
        "import json\nimport sys\n\nfrom mlflow.models import set_model\n\n"
        "# A code-less namespace folder (an editable install's conf/ and recipes/) imported by an entry point\n"
        "# must not shadow the package bundled in code/ (already on sys.path).\n"
        "if getattr(sys.modules.get('datamint_lightning'), '__file__', None) is None:\n"
        "    sys.modules.pop('datamint_lightning', None)\n\n"
        "from datamint_lightning.serving.saved_state import rebuild\n"
        f"from {model_class.__module__} import {model_class.__qualname__.split('.')[0]}\n\n"
        f"set_model(rebuild({model_class.__qualname__}, json.loads({json.dumps(json.dumps(state))})))\n"
    )
