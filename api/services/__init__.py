"""Use cases the routes call: each one function over the core, with typed errors."""
