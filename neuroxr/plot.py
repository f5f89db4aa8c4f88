"""Deprecated alias of :mod:`neuroxr.views.plot` (moved in 0.2; this alias goes in 0.3)."""

import sys
import warnings

from neuroxr.views import plot

warnings.warn("neuroxr.plot is now neuroxr.views.plot (or use neuroxr.summary_figure)", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = plot
