"""Adapters between ragmed's seams and other libraries' interfaces."""
