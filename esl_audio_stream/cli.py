"""Command line entry point (placeholder until the daemon lands)."""


def main() -> int:
    return 0
