//! Access logs: Envoy's command-operator formats written to files or standard streams.
