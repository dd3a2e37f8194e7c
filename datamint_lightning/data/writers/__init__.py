"""Writers for prediction outputs, on the source's own grid: label maps as NIfTI, NRRD or PNG (``label_maps``),
DICOM SEG (``dicom_seg``, highdicom) and DICOM RTSTRUCT (``rtstruct``). Each builds its output in memory and is
written with ``atomic.write_atomic``, so a reader never sees half a file. The readers they mirror are in
``data/readers.py``, ``data/volumes.py`` and ``data/importers/dicom_annotations.py``.
"""
