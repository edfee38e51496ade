"""Segmentation engine: folds, data, models, losses, training and inference (MONAI + torch)."""
