"""Bottleneck outlook: what will saturate first per service, tomorrow and next week."""
