"""ImageNet's channel mean and std: the normalisation of most pretrained
weights, and the default when a model family names no other."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
