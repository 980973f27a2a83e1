"""Synthetic IDRiD: fundus-like photographs with lesions drawn to the real dataset's looks, sizes and geometry,
labelled by the clinical rules from what was drawn, written in the official layout and formats.

It is the studio's built-in default dataset and the fixture of most tests. ``docs/synthetic.md`` describes what is
drawn and how it compares with the real training half.

Modules: ``records`` (geometry and lesion records), ``grading`` (ICDR grade and IDRiD DME risk from lesions),
``canvas`` (field of view, background, disc, macula, vessels, colour), ``lesions`` (lesion sampling and painting),
``render`` (one image), ``plan`` (splits, ids, grade schedule), ``writer`` (layout and file formats),
``generate`` (the whole dataset), ``measure`` (the statistics used to calibrate against the real files).
"""

from core.data.synth.generate import SynthSummary, generate_dataset

# Bump whenever the same seed would draw different images, so cached datasets (data/synthetic) are regenerated.
GENERATOR_VERSION = 2

__all__ = ["GENERATOR_VERSION", "SynthSummary", "generate_dataset"]
