"""Deprecated alias of :mod:`neuroxr.datamodel` (renamed in 0.2; this alias goes in 0.3)."""

import sys
import warnings

from neuroxr import datamodel

warnings.warn("neuroxr.model is now neuroxr.datamodel", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = datamodel
