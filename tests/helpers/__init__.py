"""Helpers the test modules share (peers, fixtures' building blocks); never tests themselves."""
