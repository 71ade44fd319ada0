"""jaxgen: generative models in JAX with one generic trainer."""

__version__ = "0.1.0"
