"""The domain vocabulary, defined once: lesions, tasks, grade names, routes, the ignore label, fovea geometry.

Imports nothing from ``core``, so every layer may import it: the data layer, the model, training, evaluation, the
figures and the app all read the lesion order, names and colours from here instead of keeping copies that drift.

Adding a sixth lesion type: append one ``Lesion`` to ``LESION_TABLE`` below (the channel order is the tuple's order)
and teach the synthetic generator to draw it: ``core/data/synth/`` writes a mask for every code here, so it needs
the drawing code (``records.DRAWN_KINDS``, ``lesions``, ``render``), the official-style folder name
(``writer.LESION_FOLDERS``) and a calibration tolerance (``measure.AREA_RATIO``). Every channel count, name, colour,
folder word, mask-file pattern, crop rule, prediction source and config check elsewhere follows from the table.
What does not follow by itself, and why:

* runs trained with five channels (``checkpoints/demo``, ``checkpoints/idrid``) no longer load: the decoder's output
  width and the lesion grader's ``FEATURES`` come from this table, so their weights and ``grader.safetensors`` have
  the old shapes; they must be trained again. Preprocessing cache entries with five mask planes are recomputed;
* configs that list ``loss.bce_pos_weight`` (five values in ``configs/*.yaml``) need one value per lesion;
* masks travel packed as the bits of one uint8 plane (``core.data.maskbits``): eight lesion types fit, a ninth
  would need a wider plane;
* the tests and docs that spell out the five codes or five channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# How a crop-trained run predicts a channel: from the whole canvas, the windows over the large canvas, or their mean.
PredictionSource = Literal["whole", "windows", "both"]


@dataclass(frozen=True)
class Lesion:
    """One mask channel: its code (file names, results, channel keys), how it reads and is found, and drawn."""

    code: str
    name: str  # English, as the app writes it
    folder_words: tuple[str, ...]  # words that identify its ground-truth folder (British and American spellings)
    colour: str  # display colour of overlays, bars and curves
    prediction_source: PredictionSource  # see PREDICTION_SOURCES
    on_crops: bool = True  # learned on training crops too; False: whole images only (see WHOLE_IMAGE_STRUCTURES)


# The lesion table in channel order: masks, model outputs and every per-lesion result follow this order.
# Prediction sources: measured at full resolution on the validation split (11 real photographs) of three crop-trained
# runs (docs/training.md): haemorrhages were found better whole in all three (pixel AUPR 0.12-0.16 against 0.08 by
# windows), large blot haemorrhages outgrowing a window's context; the mean of both scales was the best or level for
# exudates; the disc is not learned on crops at all.
# Crops: the optic disc is a sixth of the image wide, so a crop shows a piece of it at four times its whole-image
# size, which taught the whole-image disc prediction the wrong scale (docs/training.md); it is learned on whole
# images, and predicted from the whole image.
LESION_TABLE: tuple[Lesion, ...] = (
    Lesion("MA", "microaneurysms", ("microaneurysm",), "#ff2d95", "both"),
    Lesion("HE", "haemorrhages", ("haemorrhage", "hemorrhage"), "#ff3b30", "whole"),
    Lesion("EX", "hard exudates", ("hard exudate",), "#ffd60a", "both"),
    Lesion("SE", "soft exudates", ("soft exudate",), "#00e5ff", "both"),
    Lesion("OD", "optic disc", ("optic disc", "optic disk"), "#32d74b", "whole", on_crops=False),
)

LESIONS: tuple[str, ...] = tuple(lesion.code for lesion in LESION_TABLE)
NUM_LESIONS = len(LESIONS)
LESION_NAMES: dict[str, str] = {lesion.code: lesion.name for lesion in LESION_TABLE}
LESION_COLOURS: dict[str, str] = {lesion.code: lesion.colour for lesion in LESION_TABLE}
LESION_FOLDER_WORDS: dict[str, tuple[str, ...]] = {lesion.code: lesion.folder_words for lesion in LESION_TABLE}
PREDICTION_SOURCES: dict[str, PredictionSource] = {lesion.code: lesion.prediction_source for lesion in LESION_TABLE}
WHOLE_IMAGE_STRUCTURES: tuple[str, ...] = tuple(lesion.code for lesion in LESION_TABLE if not lesion.on_crops)

# The two tasks, in the order of the gate's logits, of task vectors and of the experts; a task's id is its index.
TASKS: tuple[str, ...] = ("segmentation", "classification")
SEGMENTATION, CLASSIFICATION = 0, 1
NUM_TASKS = len(TASKS)

# Grade names, index = grade: ICDR diabetic retinopathy 0-4, IDRiD risk of macular edema 0-2.
DR_NAMES: tuple[str, ...] = ("0 none", "1 mild", "2 moderate", "3 severe", "4 proliferative")
DME_NAMES: tuple[str, ...] = ("0 none", "1 far", "2 near")
NUM_DR_GRADES = len(DR_NAMES)
NUM_DME_RISKS = len(DME_NAMES)

# The grade label of a sample without grades: dropped by the cross-entropy (torch's default ignore_index) and by
# every classification metric. One definition, so that the dataset, the loss and the metrics cannot disagree.
IGNORE_INDEX = -100

# "Route" has two meanings; they are kept apart by name.
# How one forward pass of the gated model sends samples to the experts (``GatedMultiTaskModel.forward(route=...)``):
# by the gate's argmax, by each sample's true task, or to both experts.
ForwardRoute = Literal["gate", "oracle", "both"]
FORWARD_ROUTES: tuple[str, ...] = ("gate", "oracle", "both")
# How training routes its batches (config ``train.route``): a subset, "both" being for evaluation and Grad-CAM.
TrainRoute = Literal["oracle", "gate"]
TRAIN_ROUTES: tuple[str, ...] = ("oracle", "gate")
# (Where a sample *was* routed, e.g. the ``route`` column of predictions.csv, is a task name from TASKS.)

# Where the fovea sits from the optic disc, in disc diameters: temporal to the disc centre, and below it.
# The synthetic generator draws each eye's fovea uniformly within the ranges; the implied-DME read-out of predicted
# masks (core.infer.clinical) places it at one point inside them.
FOVEA_DISC_DIAMETERS_RANGE: tuple[float, float] = (2.3, 2.7)
FOVEA_BELOW_DISC_DIAMETERS_RANGE: tuple[float, float] = (0.05, 0.35)
FOVEA_DISC_DIAMETERS = 2.5
FOVEA_BELOW_DISC_DIAMETERS = 0.25

# Which part of the model gave a photograph's grades (a prediction, predictions.csv, the page and the CLI say it):
# the lesion grader reads the segmentation expert's maps (core.infer.evidence), the heads the pooled features.
GRADES_FROM_LESIONS = "lesion evidence"
GRADES_FROM_HEADS = "classification heads"
