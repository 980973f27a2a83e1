"""What the app's pages show, computed from runs and predictions without streamlit, one module per topic.

The pages only lay these out:

* ``core.views.runs``: a run's config and what it was trained on, a dataset's counts, the Train page's list of runs;
* ``core.views.evaluation``: evaluation results read back from ``eval/<split>/``, the rows of the challenge-metric,
  gate and misrouted tables, the confusion and routing matrices;
* ``core.views.gallery``: gallery tiles as RGB images;
* ``core.views.upload``: the Predict page's display image, overlay, Grad-CAM picture, tables and downloads.

Figures come from ``core.figures``.
"""
