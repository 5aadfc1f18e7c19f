//! Finding and loading plugin libraries (filled in next).
