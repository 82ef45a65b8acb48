"""Policy unit tests: case files (`*.cases.yaml`), rule coverage and JUnit reports (`policyc test`)."""
