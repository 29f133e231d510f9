"""OpenNebula's XML-RPC API (a compatible subset) for existing OpenNebula scripts and pyone."""
