"""Gated multi-task retinal image studio: data, model, training, evaluation and inference for IDRiD.

Nothing in this package imports streamlit; the app in ``app.py`` and ``pages/`` only displays what this
package computes.
"""

__version__ = "0.1.0"
