"""visitsdash: Zendesk Sell visits, kept and checked."""

__version__ = "0.1.0"
