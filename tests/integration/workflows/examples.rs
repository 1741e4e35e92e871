//! The README's workflow examples (placeholder, filled below).
