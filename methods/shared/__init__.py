"""Pieces several methods share: patch sampling, projection heads, contrastive losses."""
