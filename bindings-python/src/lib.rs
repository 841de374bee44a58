//! Python binding (pyo3): filled by the Python issue.
