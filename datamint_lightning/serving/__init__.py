"""Serving layer: the Datamint model classes and what they read and answer.

``enums`` (TaskType, PredictionMode), ``modes`` (@prediction_mode, ModeSpec, PredictionRouter), ``settings``
(ModelSettings), ``base_model`` (BaseDatamintModel: predict, device), ``datamint_model`` (linked and in-memory
models), ``saved_state`` (what of an instance is saved, without pickle), ``segmentation_model`` (2D, volume
bridges), ``volume_model`` (3D sliding window), ``classification_model``, ``inputs``/``decode``/``rest`` (input
forms), ``encoding`` (JSON outputs).
"""
