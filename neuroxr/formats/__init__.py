"""Sinks and readers of the formats a scan moves to: the release folder layout, NetCDF, Zarr, NWB."""
