//! Plugin discovery and loading for the core (runtime and backend plugins).
