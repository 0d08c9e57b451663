"""Scan: pair a dataset's images with masks, check every file, read mask values, fingerprint.

Owns: `dataset` (the scan itself), `imageinfo` (headers, decode and hash of one file),
`values` (mask value summary), `fingerprint` (the dataset digest cache), `view` (rich tables).
May import: `trainer.data` (pairing, masks, integrity, digest), `trainer.errors`,
`trainer.atomic`. Never TensorFlow: the scan runs in the planner's parent process.
"""
