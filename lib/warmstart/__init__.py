"""warmstart: adapt a pretrained decoder LLM to a new language."""

__version__ = "0.1.0"
