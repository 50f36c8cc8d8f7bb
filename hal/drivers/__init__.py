"""Drivers for the parts a charger board is built from; each takes an already-opened bus."""
