//! Balance and connect: clusters, endpoints, load balancing, connection pools and circuit breakers.
