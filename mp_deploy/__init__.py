"""mp-deploy: the Meta Prompts model (Wan et al., arXiv 2312.14733) for depth, segmentation and pose."""
__version__ = "0.1.0"
