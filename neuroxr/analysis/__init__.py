"""Analysis on any Dataset of the data model: standardisation as the official loaders do it, and the Sensorium metrics."""
