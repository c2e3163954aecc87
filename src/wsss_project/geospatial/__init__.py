"""Geospatial products of the predictions (GIS formats, CRS handling), as plain functions."""
