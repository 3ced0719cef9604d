//! The admin API (Envoy's `/stats`, `/ready`, `/config_dump`, `/clusters`, ...).
