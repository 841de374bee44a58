//! Ruby binding (magnus): filled by the Ruby issue.
