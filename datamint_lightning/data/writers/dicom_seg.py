"""DICOM SEG (binary segmentation) of a predicted label set, referencing its source series, with highdicom.

One segment per label, named by the label (``SegmentLabel``), coded with SNOMED CT where the name is a known
anatomical structure and with a local code otherwise; frames reference their source images by SOP Instance
UID (the SEG shares the source's study, patient and frame of reference). ``importers.dicom_annotations`` reads
it back onto the series' grid.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from datamint_lightning.errors import DataError

LOCAL_SCHEME = "99DMLT"  # a private coding scheme ("99" prefix) for labels SNOMED CT does not name here
SEG_SERIES_NUMBER = 9901
RTSTRUCT_SERIES_NUMBER = 9902


@dataclass(frozen=True)
class Algorithm:
    """Who made the segmentation: written into the object (algorithm identification, series description)."""

    name: str  # e.g. the registered model name
    version: str  # e.g. the registered version
    software: str = "datamint_lightning"

    @property
    def description(self) -> str:
        return (f"AI {self.name}" + (f" v{self.version}" if self.version not in ("", "local") else ""))[:64]


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("-", " ").replace("_", " ").split())


def segment_codes(name: str):
    """(category, type) codes for a label: SNOMED CT's anatomical structure when pydicom's code dictionary has
    the name (liver, spleen, kidney, ...), else a local code carrying the name."""
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    category = codes.SCT.AnatomicalStructure
    try:
        return category, getattr(codes.SCT, _camel(name))
    except AttributeError:
        return codes.SCT.Tissue, Code(_camel(name)[:16] or "Label", LOCAL_SCHEME, name[:64])


def check_source(sources: Sequence, masks: dict[str, np.ndarray], what: str) -> None:
    if not sources:
        raise DataError(f"{what} needs the source DICOM series; none was given.")
    if not masks:
        raise DataError(f"{what} needs at least one label.")
    shape = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    for name, mask in masks.items():
        if tuple(np.shape(mask)) != shape:
            raise DataError(
                f"{what}: the mask of {name!r} has shape {tuple(np.shape(mask))} but the source series is "
                f"{shape} (slice, row, column); masks must be on the series' own grid."
            )


def dicom_seg(sources: Sequence, masks: dict[str, np.ndarray], algorithm: Algorithm):
    """A binary SEG dataset. ``sources``: the series' datasets (headers suffice) in slice order; ``masks``: label
    name -> (slice, row, column) binary mask on that grid, in the model's label order."""
    import highdicom as hd
    from highdicom.seg import SegmentAlgorithmTypeValues, Segmentation, SegmentationTypeValues, SegmentDescription
    from pydicom.sr.codedict import codes

    check_source(sources, masks, "A DICOM SEG")
    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm.name[:64], version=algorithm.version[:64], family=codes.cid7162.ArtificialIntelligence
    )
    descriptions = []
    for number, name in enumerate(masks, start=1):
        category, kind = segment_codes(name)
        descriptions.append(
            SegmentDescription(
                segment_number=number,
                segment_label=name[:64],
                segmented_property_category=category,
                segmented_property_type=kind,
                algorithm_type=SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=identification,
            )
        )
    pixels = np.stack([np.asarray(m).astype(np.uint8) for m in masks.values()], axis=-1)  # (frames, r, c, segments)
    try:
        seg = Segmentation(
            source_images=list(sources),
            pixel_array=pixels,
            segmentation_type=SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=SEG_SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=algorithm.software,
            manufacturer_model_name=algorithm.name[:64],
            software_versions=algorithm.version[:64],
            device_serial_number="0",
            series_description=algorithm.description,
            content_label="AI_SEGMENT",
            omit_empty_frames=bool(pixels.any()),  # an all-empty result still needs one frame
        )
    except (ValueError, TypeError, AttributeError, KeyError) as error:
        raise DataError(
            f"Cannot build a DICOM SEG for series {sources[0].get('SeriesInstanceUID')}: {error}"
        ) from error
    return seg


def dataset_bytes(dataset) -> bytes:
    """A pydicom dataset as a DICOM Part 10 file."""
    stream = io.BytesIO()
    dataset.save_as(stream, enforce_file_format=True)
    return stream.getvalue()
