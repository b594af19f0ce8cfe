"""mp-deploy: the Meta Prompts model (Wan et al., arXiv 2312.14733) for depth, segmentation and pose."""
from mp_deploy.version import __version__  # noqa: F401

_PREDICTION = ("predict", "predict_iter", "Predictor")


def __getattr__(name):
    # mp_deploy.predict(...) and friends, imported on first use: `import mp_deploy` (the CLI) stays light
    if name in _PREDICTION:
        from mp_deploy import prediction

        return getattr(prediction, name)
    raise AttributeError(f"module 'mp_deploy' has no attribute {name!r}")
