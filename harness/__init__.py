"""staircase: a harness for long-horizon agentic optimization on a Rust vector-DB task."""

__version__ = "0.1.0"
