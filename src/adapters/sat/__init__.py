"""Adapters for SwissArmyTransformer (SAT) models."""
