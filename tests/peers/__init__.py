"""Independent peers (other people's implementations) that the end-to-end tests run against."""
