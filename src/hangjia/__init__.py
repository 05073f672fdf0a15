"""Hangjia: documents in, a domain-expert LLM out."""

__version__ = "0.1.0"
