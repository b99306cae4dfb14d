"""cnnc: a compiler for convolutional neural networks."""

__version__ = "0.1.0"


def load(*args, **kwargs):
    """A runnable model from a .cnn spec or a .cnnplan file; see cnnc.model.load."""
    from .model import load as _load
    return _load(*args, **kwargs)
