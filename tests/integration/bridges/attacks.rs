//! Bridges and would-be bridges that try to get what is not theirs.
