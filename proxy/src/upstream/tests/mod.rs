//! Tests of the balance and connect stages.
