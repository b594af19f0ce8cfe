"""mp-deploy: the Meta Prompts model (Wan et al., arXiv 2312.14733) for depth, segmentation and pose."""
__version__ = "0.1.0"

_PREDICTION = ("predict", "predict_iter", "Predictor")


def __getattr__(name):
    # mp_deploy.predict(...) and friends, imported on first use: `import mp_deploy` (the CLI) stays light
    if name in _PREDICTION:
        from mp_deploy import prediction

        return getattr(prediction, name)
    raise AttributeError(f"module 'mp_deploy' has no attribute {name!r}")
