//! Embedded analytics engine (work in progress in issue 5).
