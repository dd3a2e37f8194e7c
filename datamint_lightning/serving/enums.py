"""Task types and prediction modes: string enums whose values are the official Datamint SDK's names."""

from __future__ import annotations

from enum import Enum


class TaskType(str, Enum):
    """What a model predicts; stored as ``task_type`` in the ``datamint`` flavor."""

    IMAGE_CLASSIFICATION = "image_classification"
    MULTILABEL_IMAGE_CLASSIFICATION = "multilabel_image_classification"
    IMAGE_SEGMENTATION = "image_segmentation"
    INSTANCE_SEGMENTATION = "instance_segmentation"
    OBJECT_DETECTION = "object_detection"
    VOLUME_SEGMENTATION = "volume_segmentation"
    VOLUME_CLASSIFICATION = "volume_classification"
    VIDEO_FRAME_CLASSIFICATION = "video_frame_classification"
    VIDEO_SEGMENTATION = "video_segmentation"
    LANDMARK_DETECTION = "landmark_detection"
    ANOMALY_DETECTION = "anomaly_detection"
    REPORT_GENERATION = "report_generation"

    def __str__(self) -> str:
        return self.value


class PredictionMode(str, Enum):
    """How ``predict`` reads its inputs; sent as ``params['mode']``."""

    DEFAULT = "default"
    IMAGE = "image"
    FRAME = "frame"
    FRAME_RANGE = "frame_range"
    ALL_FRAMES = "all_frames"
    TEMPORAL_SEQUENCE = "temporal_sequence"
    SLICE = "slice"
    SLICE_RANGE = "slice_range"
    PRIMARY_SLICE = "primary_slice"
    VOLUME = "volume"
    INTERACTIVE = "interactive"
    FEW_SHOT = "few_shot"

    def __str__(self) -> str:
        return self.value
