//! Accept: bind listeners, accept connections, and pick the filter chain for each.
