"""slimtext: train, shrink and compare compact text classifiers, and serve the result."""

__version__ = "0.1.0"
