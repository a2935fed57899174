"""mistral-serve: an OpenAI-compatible gateway over supervised vLLM engines for Mistral models."""

__version__ = "0.1.0"
