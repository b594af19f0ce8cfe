"""Training in eager PyTorch: losses, optimisation, the training loop (one CPU to many GPUs with torchrun)."""
