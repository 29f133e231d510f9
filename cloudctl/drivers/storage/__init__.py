"""Disk-image storage drivers: the files behind volumes and snapshots."""
