"""The ``predict`` command: a packaged model over folders, files and DICOMweb studies, with outputs the clinic's
systems read (NIfTI/NRRD/PNG label maps on the source grid, DICOM SEG, RTSTRUCT, a CSV of scores)."""
