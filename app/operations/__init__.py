"""Operating inventory truth: reconciliation against a system of record, and policy previews (docs/OPERATIONS.md)."""
