//! Unit tests of the delta subscription.
