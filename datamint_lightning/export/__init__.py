"""The ``export`` command: a packaged model's network as ONNX or TorchScript with a JSON spec of its input,
checked against the package on held-out inputs."""
