"""Meters: measure a region and return a value with its unit, or 'unavailable' and why."""
