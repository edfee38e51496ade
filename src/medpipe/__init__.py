"""medpipe: reproducible deep-learning segmentation and radiomics pipeline."""

__version__ = "0.1.0"
