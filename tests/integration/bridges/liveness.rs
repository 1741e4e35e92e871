//! Bridges that die, are cut off or revoked; servers that restart.
