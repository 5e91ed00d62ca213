"""Kopf operator for Onion resources."""
