"""stentor-hub: take a small Stentor2 language model from raw text to a published Hub repository."""

__version__ = "0.1.0"
