//! Route: pick the virtual host and route for a request and describe what to do with it.
