//! Unit tests: config errors, the check request, decisions.
