"""turingwatch: measure what HPC batch jobs really use and tell the people who ran them."""

__version__ = "0.1.0"
