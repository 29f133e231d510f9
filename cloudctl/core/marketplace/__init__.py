"""The image marketplace: publish signed HEPiX image lists, subscribe to others' and verify them."""
