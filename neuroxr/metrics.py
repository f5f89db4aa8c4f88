"""``neuroxr.metrics`` is :mod:`neuroxr.analysis.metrics` (the public name of the Sensorium metrics)."""

import sys

from neuroxr.analysis import metrics

sys.modules[__name__] = metrics
