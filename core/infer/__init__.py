"""Inference: the Predictor for any image, sliding windows, Grad-CAM and clinical read-outs."""
