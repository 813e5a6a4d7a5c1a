"""annlib: data, models, training, timing and plots for the EMNIST CNN study."""

__version__ = "0.1.0"
