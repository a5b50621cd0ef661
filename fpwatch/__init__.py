"""fpwatch: watch hosted LLM APIs for model changes."""

__version__ = "0.1.0"
