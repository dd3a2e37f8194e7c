"""Serving layer: the Datamint model classes and what they read and answer.

``enums`` (TaskType, PredictionMode), ``modes`` (@prediction_mode), ``settings`` (ModelSettings), ``base_model``
(the router), ``datamint_model`` (linked models), ``segmentation_model`` (2D, volume bridges), ``volume_model``
(3D sliding window), ``inputs``/``rest`` (input forms), ``encoding`` (JSON outputs), ``examples`` (tiny models).
"""
