"""``python -m warmstart.report check reports/report.pdf [--pages DIR]``: the report's page invariants."""

from warmstart.report.check import main

if __name__ == "__main__":
    raise SystemExit(main())
