"""The data sets: torchvision's files on disk → device-resident tensors, scaled or whitened."""
