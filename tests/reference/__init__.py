"""Test references: slow, plain implementations written from the definitions, used by tests and benchmarks to
check the package. Nothing here is shipped with the package."""
