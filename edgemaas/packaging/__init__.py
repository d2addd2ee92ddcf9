"""Packaging: turn a model variant (model file + manifest) into something a target runs."""
