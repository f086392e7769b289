"""`python -m benchmarks` (what `make bench` runs): see benchmarks/harness.py."""

from benchmarks.harness import main

raise SystemExit(main())
