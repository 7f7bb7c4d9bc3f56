"""Tenancy: organizations in a tree, users with roles, and who may see what."""
